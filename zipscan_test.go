package goproxy

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/dirhash"
)

// zipEntry is a file for buildZip.
type zipEntry struct {
	name   string
	body   []byte
	method uint16
	raw    bool // sizes and CRC in the local header, no data descriptor
}

// buildZip writes a zip of entries with archive/zip: through CreateHeader
// (a data descriptor after the data) or, raw, CreateRaw (sizes and CRC in
// the local header).
func buildZip(t testing.TB, entries ...zipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		if !e.raw {
			w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: e.method})
			if err != nil {
				t.Fatal(err)
			}
			w.Write(e.body)
			continue
		}
		data := e.body
		if e.method == zip.Deflate {
			var c bytes.Buffer
			fw, _ := flate.NewWriter(&c, flate.BestSpeed)
			fw.Write(e.body)
			fw.Close()
			data = c.Bytes()
		}
		w, err := zw.CreateRaw(&zip.FileHeader{Name: e.name, Method: e.method, CRC32: crc32.ChecksumIEEE(e.body),
			CompressedSize64: uint64(len(data)), UncompressedSize64: uint64(len(e.body))})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zip64StoredZip builds, by hand, a zip of one stored file whose local
// header and directory record give their sizes in a zip64 extra field, as
// some writers do for every entry.
func zip64StoredZip(name string, body []byte) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	crc := crc32.ChecksumIEEE(body)
	extra := le.AppendUint16(nil, 0x0001)
	extra = le.AppendUint16(extra, 16)
	extra = le.AppendUint64(extra, uint64(len(body)))
	extra = le.AppendUint64(extra, uint64(len(body)))
	h := le.AppendUint32(nil, sigLocalHeader)
	h = le.AppendUint16(h, 45)                 // version needed
	h = le.AppendUint16(h, 0)                  // flags
	h = le.AppendUint16(h, 0)                  // stored
	h = le.AppendUint32(h, 0)                  // time and date
	h = le.AppendUint32(h, crc)                // CRC-32
	h = le.AppendUint32(h, 0xFFFFFFFF)         // in the extra field
	h = le.AppendUint32(h, 0xFFFFFFFF)         // in the extra field
	h = le.AppendUint16(h, uint16(len(name)))  // name
	h = le.AppendUint16(h, uint16(len(extra))) // extra
	b.Write(h)
	b.WriteString(name)
	b.Write(extra)
	b.Write(body)
	cdStart := b.Len()
	extraCD := le.AppendUint16(nil, 0x0001)
	extraCD = le.AppendUint16(extraCD, 24)
	extraCD = le.AppendUint64(extraCD, uint64(len(body)))
	extraCD = le.AppendUint64(extraCD, uint64(len(body)))
	extraCD = le.AppendUint64(extraCD, 0) // header offset
	d := le.AppendUint32(nil, sigCentralDir)
	d = le.AppendUint16(d, 45)
	d = le.AppendUint16(d, 45)
	d = le.AppendUint16(d, 0)
	d = le.AppendUint16(d, 0)
	d = le.AppendUint32(d, 0)
	d = le.AppendUint32(d, crc)
	d = le.AppendUint32(d, 0xFFFFFFFF)
	d = le.AppendUint32(d, 0xFFFFFFFF)
	d = le.AppendUint16(d, uint16(len(name)))
	d = le.AppendUint16(d, uint16(len(extraCD)))
	d = le.AppendUint16(d, 0)          // comment
	d = le.AppendUint16(d, 0)          // disk
	d = le.AppendUint16(d, 0)          // internal attributes
	d = le.AppendUint32(d, 0)          // external attributes
	d = le.AppendUint32(d, 0xFFFFFFFF) // header offset: in the extra field
	b.Write(d)
	b.WriteString(name)
	b.Write(extraCD)
	cdLen := b.Len() - cdStart
	e := le.AppendUint32(nil, sigDirEnd)
	e = le.AppendUint16(e, 0)
	e = le.AppendUint16(e, 0)
	e = le.AppendUint16(e, 1)
	e = le.AppendUint16(e, 1)
	e = le.AppendUint32(e, uint32(cdLen))
	e = le.AppendUint32(e, uint32(cdStart))
	e = le.AppendUint16(e, 0)
	b.Write(e)
	return b.Bytes()
}

// scanBytes scans data as a zip and cross-checks it.
func scanBytes(data []byte) *zipScan {
	scan := scanZip(bytes.NewReader(data), nil)
	if scan.err == nil {
		scan.err = scan.crossCheck(bytes.NewReader(data), int64(len(data)))
	}
	return scan
}

func hashZipData(t testing.TB, data []byte) (string, error) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "z.zip")
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dirhash.HashZip(name, dirhash.Hash1)
}

func TestZipScanHashesAsDirhashDoes(t *testing.T) {
	random := make([]byte, 600<<10)
	rand.NewChaCha8([32]byte{1}).Read(random)
	text := bytes.Repeat([]byte("package p // some source code\n"), 20000)
	withSig := append(bytes.Repeat([]byte("x"), 1000), []byte("PK\x07\x08 looks like a data descriptor")...)
	withSig = append(withSig, text[:5000]...)
	const m = "example.com/m@v1.0.0/"
	for _, tt := range []struct {
		name string
		zip  []byte
	}{
		{"deflated, with data descriptors (modzip.Create's kind)", buildZip(t,
			zipEntry{name: m + "go.mod", body: []byte("module example.com/m\n"), method: zip.Deflate},
			zipEntry{name: m + "p.go", body: text, method: zip.Deflate},
			zipEntry{name: m + "data.bin", body: random, method: zip.Deflate})},
		{"stored, with data descriptors", buildZip(t,
			zipEntry{name: m + "go.mod", body: []byte("module example.com/m\n"), method: zip.Store},
			zipEntry{name: m + "data.bin", body: random, method: zip.Store},
			zipEntry{name: m + "sig.txt", body: withSig, method: zip.Store})},
		{"sizes in the local headers", buildZip(t,
			zipEntry{name: m + "go.mod", body: []byte("module example.com/m\n"), method: zip.Store, raw: true},
			zipEntry{name: m + "p.go", body: text, method: zip.Deflate, raw: true})},
		{"empty files", buildZip(t,
			zipEntry{name: m + "empty", method: zip.Store},
			zipEntry{name: m + "empty.deflated", method: zip.Deflate})},
		{"a directory entry", buildZip(t,
			zipEntry{name: m + "dir/", method: zip.Store},
			zipEntry{name: m + "dir/f.go", body: []byte("package dir\n"), method: zip.Deflate})},
		{"names out of order, one twice", buildZip(t,
			zipEntry{name: m + "b.go", body: []byte("package b\n"), method: zip.Deflate},
			zipEntry{name: m + "a.go", body: []byte("package a\n"), method: zip.Deflate},
			zipEntry{name: m + "b.go", body: []byte("package b // again\n"), method: zip.Store})},
		{"zip64 sizes", zip64StoredZip(m+"go.mod", []byte("module example.com/m\n"))},
		{"no file at all", buildZip(t)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want, err := hashZipData(t, tt.zip)
			if err != nil {
				t.Fatal(err)
			}
			scan := scanBytes(tt.zip)
			if scan.err != nil || !scan.verified {
				t.Fatalf("scan: %v", scan.err)
			}
			if got, err := scan.hash1(); got != want || err != nil {
				t.Errorf("scan's hash %s (%v), dirhash.HashZip's %s", got, err, want)
			}
		})
	}
}

func TestZipScanRefusesWhatItCannotVouchFor(t *testing.T) {
	const m = "example.com/m@v1.0.0/"
	good := buildZip(t,
		zipEntry{name: m + "go.mod", body: []byte("module example.com/m\n"), method: zip.Deflate, raw: true},
		zipEntry{name: m + "a.go", body: []byte("package a\n"), method: zip.Store, raw: true})
	// A directory that names another file than the entry it points at.
	renamed := bytes.Clone(good)
	cd := bytes.LastIndex(renamed, []byte("PK\x01\x02"))
	i := bytes.Index(renamed[cd:], []byte("a.go"))
	copy(renamed[cd+i:], "b.go")
	// A byte of stored content changed: the CRC says so.
	damaged := bytes.Clone(good)
	damaged[bytes.Index(damaged, []byte("package a"))] ^= 1
	// Junk between two entries.
	second := bytes.Index(good, []byte("PK\x03\x04"))
	second += 4 + bytes.Index(good[second+4:], []byte("PK\x03\x04"))
	junk := append(append(bytes.Clone(good[:second]), "junk"...), good[second:]...)
	for _, tt := range []struct {
		name string
		zip  []byte
	}{
		{"directory naming another file", renamed},
		{"damaged content", damaged},
		{"junk between entries", junk},
		{"cut before its directory", good[:cd]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if scan := scanBytes(tt.zip); scan.verified || scan.err == nil {
				t.Errorf("scan vouched for it (%v)", scan.err)
			}
		})
	}
}

// FuzzZipScan checks the scan's promise: whatever the bytes, when the
// scan vouches for a zip, dirhash.HashZip agrees with its hash.
func FuzzZipScan(f *testing.F) {
	const m = "example.com/m@v1.0.0/"
	f.Add(buildZip(f, zipEntry{name: m + "go.mod", body: []byte("module example.com/m\n"), method: zip.Deflate}))
	f.Add(buildZip(f, zipEntry{name: m + "a", body: []byte("aaaa"), method: zip.Store},
		zipEntry{name: m + "b", body: []byte("bbbb"), method: zip.Deflate, raw: true}))
	f.Add(zip64StoredZip(m+"go.mod", []byte("module example.com/m\n")))
	f.Fuzz(func(t *testing.T, data []byte) {
		scan := scanBytes(data)
		if !scan.verified {
			return
		}
		got, err := scan.hash1()
		want, werr := hashZipData(t, data)
		if err != nil || werr != nil {
			if (err == nil) != (werr == nil) {
				t.Fatalf("scan's hash %s (%v), dirhash.HashZip's %s (%v)", got, err, want, werr)
			}
			return
		}
		if got != want {
			t.Fatalf("scan's hash %s, dirhash.HashZip's %s", got, want)
		}
	})
}

// BenchmarkZipScan scans a zip of stored random data (as the big zip of
// the benchmark is) from memory: the scan's own cost, its read-ahead
// buffer included, without the file it reads in the proxy.
func BenchmarkZipScan(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	var entries []zipEntry
	for i := range 4 {
		body := make([]byte, 8<<20)
		for j := range body {
			body[j] = byte(rng.Uint32())
		}
		entries = append(entries, zipEntry{name: "m@v1.0.0/f" + string(rune('a'+i)), body: body, method: zip.Store, raw: true})
	}
	z := buildZip(b, entries...)
	b.SetBytes(int64(len(z)))
	for b.Loop() {
		s := scanZip(bytes.NewReader(z), nil)
		if s.err != nil {
			b.Fatal(s.err)
		}
	}
}

// zerosDeflated returns a deflate stream of n·258+1 zero bytes, written
// by hand (a literal, then copies of 258 bytes at distance 1, in fixed
// Huffman codes) so that a huge expansion costs the test nothing to make.
func zerosDeflated(n int) []byte {
	var out []byte
	var acc uint64
	var nbits uint
	bits := func(v uint64, k uint) { // LSB first
		acc |= v << nbits
		nbits += k
		for nbits >= 8 {
			out = append(out, byte(acc))
			acc >>= 8
			nbits -= 8
		}
	}
	code := func(c uint64, k uint) { // a Huffman code, MSB first
		for i := int(k) - 1; i >= 0; i-- {
			bits((c>>uint(i))&1, 1)
		}
	}
	bits(1, 1)    // final block
	bits(1, 2)    // fixed Huffman codes
	code(0x30, 8) // literal 0
	for range n {
		code(0xC5, 8) // length 258
		code(0, 5)    // distance 1
	}
	code(0, 7) // end of block
	if nbits > 0 {
		out = append(out, byte(acc))
	}
	return out
}

// A deflated entry whose data expands far past the size its header (and
// the directory) gives is refused once it passes that size: inflated to
// its end, a zip of a few megabytes would cost the scan minutes of CPU
// (and the clients waiting for its verdict as long), where archive/zip,
// which the file would be checked with otherwise, stops at the size.
func TestZipScanStopsAnEntryAtTheSizeItsHeaderGives(t *testing.T) {
	const m = "example.com/bomb@v1.0.0/"
	stream := zerosDeflated(2 << 20) // 516 MB of zeros
	small := make([]byte, 1024)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{Name: m + "go.mod", Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(small),
		CompressedSize64: uint64(len(stream)), UncompressedSize64: uint64(len(small))})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(stream)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	scan := scanZip(bytes.NewReader(buf.Bytes()), nil)
	if scan.err == nil {
		t.Fatal("the scan took the entry")
	}
	if scan.end > int64(len(stream)/2) {
		t.Errorf("the scan read %d of the %d compressed bytes before it refused the entry (%v)", scan.end, len(stream), scan.err)
	}
}

// A stored entry sized only by its data descriptor is followed to the
// descriptor's signature; a zip whose data is full of that signature must
// not cost a report of progress (a release, a wake-up of every client
// streaming the zip) for each false one.
func TestZipScanReportsAFalseDescriptorSignatureNoMoreThanData(t *testing.T) {
	const m = "example.com/large@v1.0.0/"
	data := bytes.Repeat([]byte("PK\x07\x08"), 1<<20) // 4 MiB
	z := buildZip(t,
		zipEntry{name: m + "go.mod", body: []byte("module example.com/large\n"), method: zip.Store},
		zipEntry{name: m + "sigs.bin", body: data, method: zip.Store})
	reports := 0
	scan := scanZip(bytes.NewReader(z), func(int64) { reports++ })
	if scan.err != nil {
		t.Fatal(scan.err)
	}
	if err := scan.crossCheck(bytes.NewReader(z), int64(len(z))); err != nil {
		t.Fatal(err)
	}
	if limit := len(z) / 4096; reports > limit {
		t.Errorf("%d reports of progress for a %d-byte zip; want at most %d", reports, len(z), limit)
	}
}
