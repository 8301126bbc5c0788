package goproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/mod/module"
)

// fillJournalHeader starts every journal, so that a file of something
// else is never taken for one (or appended to).
const fillJournalHeader = "goproxy fill journal 1\n"

// fillJournal records the items a fill has finished, one line each, so
// that a fill killed halfway resumes where it stopped. Lines are appended
// with one write each, in append mode; a line cut short by a kill lacks its newline and is
// dropped when the journal is opened again. The journal is not synced
// after each line: a killed process loses nothing the kernel has, and
// after a power failure the worst case is fetching some items again.
type fillJournal struct {
	mu   sync.Mutex
	f    *os.File
	done map[module.Version]FillFiles
}

// openFillJournal opens or creates the journal at name and reads what it
// records.
func openFillJournal(name string) (*fillJournal, error) {
	// O_APPEND: two fills sharing a journal (two processes, two requests
	// of one plan) each add whole lines at its end, never over the
	// other's, which would leave lines no later run can read.
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("fill journal: %w", err)
	}
	j := &fillJournal{f: f, done: make(map[module.Version]FillFiles)}
	if err := j.load(); err != nil {
		f.Close()
		return nil, fmt.Errorf("fill journal %s: %w", name, err)
	}
	return j, nil
}

// maxJournalLine bounds a journal line: a module path, a version and a
// few letters.
const maxJournalLine = 4096

func (j *fillJournal) load() error {
	br := bufio.NewReaderSize(j.f, 2*maxJournalLine)
	header, err := br.ReadString('\n')
	if err == io.EOF && header == "" || err == io.EOF && strings.HasPrefix(fillJournalHeader, header) {
		// New, or killed while writing the header.
		if err := j.f.Truncate(0); err != nil {
			return err
		}
		if _, err := j.f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		_, err := j.f.WriteString(fillJournalHeader)
		return err
	}
	if err != nil && err != io.EOF {
		return err
	}
	if header != fillJournalHeader {
		return errors.New("not a fill journal (it does not start with " + strconv.Quote(strings.TrimSpace(fillJournalHeader)) + ")")
	}
	end := int64(len(header)) // the end of the last whole line
	for lineNo := 2; ; lineNo++ {
		line, err := br.ReadSlice('\n')
		if err == io.EOF {
			break // a last line without a newline was cut short
		}
		if err != nil {
			return fmt.Errorf("line %d: %w", lineNo, err)
		}
		end += int64(len(line))
		m, files, err := parseJournalLine(string(bytes.TrimSuffix(line, []byte("\n"))))
		if err != nil {
			return fmt.Errorf("line %d: %w", lineNo, err)
		}
		j.done[m] |= files
	}
	// Drop a line cut short, so the next one starts on a line of its own.
	if err := j.f.Truncate(end); err != nil {
		return err
	}
	_, err = j.f.Seek(end, io.SeekStart)
	return err
}

// Journal lines are "done <path> <version> <files>", files being letters
// i, m and z.
func parseJournalLine(line string) (module.Version, FillFiles, error) {
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != "done" {
		return module.Version{}, 0, fmt.Errorf("malformed line %q", line)
	}
	if err := checkFillVersion(f[1], f[2]); err != nil {
		return module.Version{}, 0, err
	}
	var files FillFiles
	for _, c := range f[3] {
		switch c {
		case 'i':
			files |= FillInfo
		case 'm':
			files |= FillMod
		case 'z':
			files |= FillZip
		default:
			return module.Version{}, 0, fmt.Errorf("malformed line %q", line)
		}
	}
	return module.Version{Path: f[1], Version: f[2]}, files, nil
}

func formatJournalLine(it FillItem) string {
	var files []byte
	for _, b := range []struct {
		bit FillFiles
		c   byte
	}{{FillInfo, 'i'}, {FillMod, 'm'}, {FillZip, 'z'}} {
		if it.Files&b.bit != 0 {
			files = append(files, b.c)
		}
	}
	return "done " + it.Path + " " + it.Version + " " + string(files) + "\n"
}

// has reports whether an earlier run finished every file of it.
func (j *fillJournal) has(it FillItem) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.done[module.Version{Path: it.Path, Version: it.Version}]&it.Files == it.Files
}

// record appends it as finished.
func (j *fillJournal) record(it FillItem) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(it.Path)+len(it.Version) > maxJournalLine {
		return fmt.Errorf("fill journal: %s: too long to record", it)
	}
	if _, err := j.f.WriteString(formatJournalLine(it)); err != nil {
		return fmt.Errorf("fill journal: %w", err)
	}
	j.done[module.Version{Path: it.Path, Version: it.Version}] |= it.Files
	return nil
}

func (j *fillJournal) Close() error {
	err := j.f.Sync()
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	return err
}
