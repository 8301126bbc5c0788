package goproxy

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"
	"strings"

	modzip "golang.org/x/mod/zip"
)

// A module zip is checked and hashed in one pass over its bytes, in order,
// as they land on disk, instead of in a second pass once it is whole: the
// local file headers say where each entry's data starts and how it is
// compressed, so each entry is decompressed, its CRC-32 checked and its
// SHA-256 (what dirhash.Hash1 sums) taken as it streams. When the central
// directory arrives, it is cross-checked against what the scan found:
// every file of the directory must be the entry scanned at the same
// offset, with the same name, method, sizes and CRC, in the same order, and
// nothing else. Then the scan's hash is what dirhash.HashZip gives (it
// reads the same bytes, found through the directory), and the CRCs are
// what archive/zip checks. A zip the scan cannot follow (an unknown method,
// encryption, a stored entry whose size only its data descriptor gives,
// with no signature to find that by, junk between entries) or that fails
// the cross-check is hashed and checked the usual way, from the file.

// Zip signatures.
const (
	sigLocalHeader = 0x04034b50
	sigCentralDir  = 0x02014b50
	sigDirEnd      = 0x06054b50 // end of central directory
	sigDescriptor  = 0x08074b50
)

// scannedEntry is a zip entry as its local header and data showed it.
type scannedEntry struct {
	name         string
	headerOffset int64
	dataOffset   int64
	flags        uint16
	method       uint16
	crc          uint32
	csize, usize uint64
	sum          [sha256.Size]byte // of the uncompressed content
}

// zipScan is what one pass over a zip's bytes found.
type zipScan struct {
	entries []scannedEntry
	// end is where the scan stopped: the start of the central
	// directory, when err is nil.
	end int64
	// err says why the scan stopped before the central directory.
	err error
	// verified is set once the central directory agreed with the
	// entries: then hash1 is the zip's dirhash.Hash1, and every entry's
	// CRC-32 was checked.
	verified bool
}

// zipScanner reads a zip from its start.
type zipScanner struct {
	br  *bufio.Reader
	pos int64 // offset of the next byte br gives
	// progress, if set, is told how far the scan has come: every byte
	// before is a local header or entry data.
	progress func(pos int64)
	scan     zipScan
	buf      []byte
	sha      hash.Hash
	crc      hash.Hash32
	// lastUsize is how much uncompressed content copyData hashed last;
	// content how much the entries scanned hold in all.
	lastUsize uint64
	content   int64
}

// maxScannedContent is the most uncompressed content a scan follows: what
// golang.org/x/mod/zip allows a module's files in all.
const maxScannedContent = modzip.MaxZipFile

// scanBufferSize is the read-ahead of a scan: it must hold a data
// descriptor looked for past a chunk of stored data.
const scanBufferSize = 256 << 10

// scanZip scans the zip r gives from its first byte, reporting progress.
func scanZip(r io.Reader, progress func(int64)) *zipScan {
	z := &zipScanner{br: bufio.NewReaderSize(r, scanBufferSize), progress: progress, buf: make([]byte, 64<<10),
		sha: sha256.New(), crc: crc32.NewIEEE()}
	z.scan.err = z.run()
	z.scan.end = z.pos
	return &z.scan
}

func (z *zipScanner) run() error {
	for {
		b, err := z.br.Peek(4)
		if err != nil {
			return fmt.Errorf("the zip ends before its central directory: %w", noEOF(err))
		}
		switch binary.LittleEndian.Uint32(b) {
		case sigLocalHeader:
			if err := z.entry(); err != nil {
				return err
			}
			z.report()
		case sigCentralDir, sigDirEnd:
			return nil
		default:
			return fmt.Errorf("unexpected bytes at offset %d, after %d entries", z.pos, len(z.scan.entries))
		}
	}
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (z *zipScanner) report() {
	if z.progress != nil {
		z.progress(z.pos)
	}
}

// Read, ReadByte: the scanner as the reader of compressed data, which
// flate reads byte by byte past nothing.
func (z *zipScanner) Read(p []byte) (int, error) {
	n, err := z.br.Read(p)
	z.pos += int64(n)
	return n, err
}

func (z *zipScanner) ReadByte() (byte, error) {
	c, err := z.br.ReadByte()
	if err == nil {
		z.pos++
	}
	return c, err
}

func (z *zipScanner) readFull(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(z, b); err != nil {
		return nil, noEOF(err)
	}
	return b, nil
}

// entry scans one local entry: header, data and data descriptor.
func (z *zipScanner) entry() error {
	e := scannedEntry{headerOffset: z.pos}
	h, err := z.readFull(30)
	if err != nil {
		return err
	}
	e.flags = binary.LittleEndian.Uint16(h[6:])
	e.method = binary.LittleEndian.Uint16(h[8:])
	crc := binary.LittleEndian.Uint32(h[14:])
	csize := uint64(binary.LittleEndian.Uint32(h[18:]))
	usize := uint64(binary.LittleEndian.Uint32(h[22:]))
	nameLen, extraLen := int(binary.LittleEndian.Uint16(h[26:])), int(binary.LittleEndian.Uint16(h[28:]))
	rest, err := z.readFull(nameLen + extraLen)
	if err != nil {
		return err
	}
	e.name = string(rest[:nameLen])
	zip64 := false
	for extra := rest[nameLen:]; len(extra) >= 4; {
		id, size := binary.LittleEndian.Uint16(extra), int(binary.LittleEndian.Uint16(extra[2:]))
		extra = extra[4:]
		if size > len(extra) {
			break
		}
		if id == 0x0001 { // zip64: the sizes that did not fit, in order
			zip64 = true
			f := extra[:size]
			if usize == 0xFFFFFFFF && len(f) >= 8 {
				usize, f = binary.LittleEndian.Uint64(f), f[8:]
			}
			if csize == 0xFFFFFFFF && len(f) >= 8 {
				csize = binary.LittleEndian.Uint64(f)
			}
		}
		extra = extra[size:]
	}
	if e.flags&0x1 != 0 {
		return fmt.Errorf("%s: encrypted", e.name)
	}
	e.dataOffset = z.pos
	z.sha.Reset()
	z.crc.Reset()
	described := e.flags&0x8 != 0
	switch e.method {
	case zip.Store:
		if described {
			if err := z.storedUntilDescriptor(&e, zip64); err != nil {
				return err
			}
			break
		}
		if csize != usize {
			return fmt.Errorf("%s: stored with sizes %d and %d", e.name, csize, usize)
		}
		if err := z.storedData(csize); err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		e.csize, e.usize = csize, usize
	case zip.Deflate:
		// Inflated no further than the header's size, or than what is
		// left of what a module's files may add up to (the directory,
		// which must agree, is held to it): a stream that expands a
		// thousandfold would cost minutes of CPU to follow to its end.
		most := maxScannedContent - z.content
		if !described {
			most = min(most, int64(min(usize, uint64(maxScannedContent))))
		}
		fr := flate.NewReader(z)
		err := z.copyData(io.LimitReader(fr, most+1), -1)
		if err == nil && int64(z.lastUsize) > most {
			err = fmt.Errorf("inflates past %d bytes, the most its header or the module's size allows", most)
		}
		fr.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		e.csize, e.usize = uint64(z.pos-e.dataOffset), z.lastUsize
		if described {
			if err := z.descriptor(&e, zip64); err != nil {
				return err
			}
		} else if e.csize != csize || e.usize != usize {
			return fmt.Errorf("%s: sizes %d and %d, not the %d and %d its header says", e.name, e.csize, e.usize, csize, usize)
		}
	default:
		return fmt.Errorf("%s: compression method %d", e.name, e.method)
	}
	e.crc = z.crc.Sum32()
	if !described && e.crc != crc {
		return fmt.Errorf("%s: %w", e.name, zip.ErrChecksum)
	}
	if strings.HasSuffix(e.name, "/") {
		// archive/zip reads a directory as empty, or fails.
		if e.usize != 0 {
			return fmt.Errorf("%s: a directory with content", e.name)
		}
		z.sha.Reset()
	}
	z.sha.Sum(e.sum[:0])
	z.content += int64(e.usize)
	z.scan.entries = append(z.scan.entries, e)
	return nil
}

// copyData hashes the uncompressed content r gives, want bytes if want is
// not negative, reporting progress as it goes.
func (z *zipScanner) copyData(r io.Reader, want int64) error {
	var n int64
	for {
		k, err := r.Read(z.buf)
		if k > 0 {
			z.sha.Write(z.buf[:k])
			z.crc.Write(z.buf[:k])
			n += int64(k)
			z.report()
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return noEOF(err)
		}
	}
	if want >= 0 && n != want {
		return io.ErrUnexpectedEOF
	}
	z.lastUsize = uint64(n)
	return nil
}

// storedData hashes n bytes of stored data where the read-ahead buffer
// holds them, as they arrive: copied out first, the bytes of a large zip
// cost a pass over memory more than the hash itself.
func (z *zipScanner) storedData(n uint64) error {
	for n > 0 {
		if z.br.Buffered() == 0 {
			// One read of what has arrived, not a buffer's worth.
			if _, err := z.br.Peek(1); err != nil {
				return noEOF(err)
			}
		}
		b, _ := z.br.Peek(int(min(n, uint64(z.br.Buffered()))))
		n -= uint64(len(b))
		z.hashStored(b)
	}
	return nil
}

// descriptor reads the data descriptor after an entry's data: an optional
// signature, the CRC-32 and the sizes (64-bit in a zip64 entry), which
// must be what the data was.
func (z *zipScanner) descriptor(e *scannedEntry, zip64 bool) error {
	if b, err := z.br.Peek(4); err == nil && binary.LittleEndian.Uint32(b) == sigDescriptor {
		z.readFull(4)
	}
	n := 12
	if zip64 {
		n = 20
	}
	d, err := z.readFull(n)
	if err != nil {
		return err
	}
	crc, csize, usize := binary.LittleEndian.Uint32(d), uint64(binary.LittleEndian.Uint32(d[4:])), uint64(binary.LittleEndian.Uint32(d[8:]))
	if zip64 {
		csize, usize = binary.LittleEndian.Uint64(d[4:]), binary.LittleEndian.Uint64(d[12:])
	}
	if crc != z.crc.Sum32() {
		return fmt.Errorf("%s: %w", e.name, zip.ErrChecksum)
	}
	if csize != e.csize || usize != e.usize {
		return fmt.Errorf("%s: sizes %d and %d, not the %d and %d its data descriptor says", e.name, e.csize, e.usize, csize, usize)
	}
	return nil
}

// storedUntilDescriptor hashes a stored entry whose size only its data
// descriptor gives, finding that by its signature: a signature followed
// by the CRC-32 and the size of the data before it, the odds of which in
// the data are nil. An entry with no signature cannot be scanned.
func (z *zipScanner) storedUntilDescriptor(e *scannedEntry, zip64 bool) error {
	sig := []byte{'P', 'K', 7, 8}
	descLen := 16
	if zip64 {
		descLen = 24
	}
	var n uint64 // data hashed
	for {
		// What has arrived, and at least a descriptor's worth: the
		// scan (and the release of what it followed) keeps up with
		// the download rather than wait for a buffer's worth.
		b, err := z.br.Peek(max(descLen, z.br.Buffered()))
		if len(b) < descLen {
			return fmt.Errorf("%s: no data descriptor found: %w", e.name, noEOF(err))
		}
		// The signatures in b are tried in turn, b consumed once: a
		// false one costs no more than the data it is.
		h := 0 // of b, hashed
		for {
			j := bytes.Index(b[h:], sig)
			if j < 0 {
				// Keep what may be the start of a signature.
				k := max(h, len(b)-(len(sig)-1))
				z.hashOnly(b[h:k])
				h = k
				break
			}
			i := h + j
			z.hashOnly(b[h:i])
			h = i
			if i+descLen > len(b) {
				break // read on to have it whole
			}
			d := b[i+4 : i+descLen]
			crc := binary.LittleEndian.Uint32(d)
			csize, usize := uint64(binary.LittleEndian.Uint32(d[4:])), uint64(binary.LittleEndian.Uint32(d[8:]))
			if zip64 {
				csize, usize = binary.LittleEndian.Uint64(d[4:]), binary.LittleEndian.Uint64(d[12:])
			}
			if size := n + uint64(h); crc == z.crc.Sum32() && csize == size && usize == size {
				z.consume(h)
				z.br.Discard(descLen)
				z.pos += int64(descLen)
				e.csize, e.usize = size, size
				return nil
			}
			// The signature is data.
			z.hashOnly(b[i : i+1])
			h = i + 1
		}
		if h == 0 {
			return fmt.Errorf("%s: no data descriptor found: %w", e.name, noEOF(err))
		}
		n += uint64(h)
		z.consume(h)
	}
}

// hashOnly hashes stored data that br holds, without consuming it.
func (z *zipScanner) hashOnly(b []byte) {
	z.sha.Write(b)
	z.crc.Write(b)
}

// consume consumes n bytes of stored data that br holds, hashed already.
func (z *zipScanner) consume(n int) {
	z.br.Discard(n)
	z.pos += int64(n)
	z.report()
}

// hashStored hashes stored data that br holds, and consumes it; b must
// not be used after.
func (z *zipScanner) hashStored(b []byte) {
	z.sha.Write(b)
	z.crc.Write(b)
	z.br.Discard(len(b))
	z.pos += int64(len(b))
	z.report()
}

// crossCheck compares the scan with the zip's central directory, read from
// r (the whole zip, of size bytes), and sets verified when they agree.
func (s *zipScan) crossCheck(r io.ReaderAt, size int64) error {
	if s.err != nil {
		return s.err
	}
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return err
	}
	if len(zr.File) != len(s.entries) {
		return fmt.Errorf("the central directory lists %d files, the zip holds %d entries", len(zr.File), len(s.entries))
	}
	for i, f := range zr.File {
		e := &s.entries[i]
		off, err := f.DataOffset()
		if err != nil {
			return err
		}
		if f.Name != e.name || off != e.dataOffset || f.Method != e.method || f.Flags&0x8 != e.flags&0x8 ||
			f.CRC32 != e.crc || f.CompressedSize64 != e.csize || f.UncompressedSize64 != e.usize {
			return fmt.Errorf("the central directory's file %d (%q) is not the entry at offset %d", i, f.Name, e.headerOffset)
		}
	}
	s.verified = true
	return nil
}

// hash1 returns the zip's dirhash.Hash1, as dirhash.HashZip computes it:
// the files by name (the last of a name for every occurrence of it),
// sorted. It must only be used once verified is set.
func (s *zipScan) hash1() (string, error) {
	if !s.verified {
		return "", errors.New("the zip was not scanned")
	}
	sums := make(map[string]*[sha256.Size]byte, len(s.entries))
	names := make([]string, 0, len(s.entries))
	for i := range s.entries {
		e := &s.entries[i]
		sums[e.name] = &e.sum
		names = append(names, e.name)
	}
	slices.Sort(names)
	h := sha256.New()
	for _, name := range names {
		if strings.Contains(name, "\n") {
			return "", errors.New("dirhash: filenames with newlines are not supported")
		}
		fmt.Fprintf(h, "%x  %s\n", sums[name][:], name)
	}
	return "h1:" + base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}
