package clickhouse

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// errSpoolFull: the batch would take the spool over its size limit.
var errSpoolFull = errors.New("spool full")

// spool is a bounded on-disk FIFO of batches that could not be written
// yet. One file per batch, named by a sequence number so that a directory
// listing is the order; written to a temporary name, synced and renamed, so
// a crash leaves whole batches or none. It survives restarts of the relay.
type spool struct {
	dir string
	max int64

	mu    sync.Mutex
	files []spoolFile // oldest first
	bytes int64
	next  uint64
}

type spoolFile struct {
	seq  uint64
	size int64
}

const spoolExt = ".batch"

func openSpool(dir string, max int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	s := &spool{dir: dir, max: max}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(dir, name)) // a write the crash interrupted
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, spoolExt), 10, 64)
		if err != nil || !strings.HasSuffix(name, spoolExt) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		s.files = append(s.files, spoolFile{seq, info.Size()})
		s.bytes += info.Size()
		s.next = max64(s.next, seq+1)
	}
	sort.Slice(s.files, func(i, j int) bool { return s.files[i].seq < s.files[j].seq })
	return s, nil
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func (s *spool) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, spoolExt))
}

// push appends b; errSpoolFull when it does not fit.
func (s *spool) push(b *Batch) error {
	var buf []byte
	buf, _ = json.Marshal(b)
	buf = append(buf, '\n')
	for i := range b.Rows {
		line, err := json.Marshal(&b.Rows[i])
		if err != nil {
			return fmt.Errorf("spool batch %d: %w", b.ID, err)
		}
		buf = append(append(buf, line...), '\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	size := int64(len(buf))
	if s.bytes+size > s.max {
		return errSpoolFull
	}
	seq := s.next
	final := s.path(seq)
	tmp := final + ".tmp"
	if err := writeSynced(tmp, buf); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool batch %d: %w", b.ID, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool batch %d: %w", b.ID, err)
	}
	s.next++
	s.files = append(s.files, spoolFile{seq, size})
	s.bytes += size
	return nil
}

func writeSynced(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// oldest reads the oldest batch; nil when the spool is empty.
func (s *spool) oldest() (*Batch, error) {
	s.mu.Lock()
	if len(s.files) == 0 {
		s.mu.Unlock()
		return nil, nil
	}
	name := s.path(s.files[0].seq)
	s.mu.Unlock()
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	var b Batch
	if !sc.Scan() {
		return nil, fmt.Errorf("%s: empty", name)
	}
	if err := json.Unmarshal(sc.Bytes(), &b); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for sc.Scan() {
		var r Row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: row %d: %w", name, len(b.Rows), err)
		}
		b.Rows = append(b.Rows, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &b, nil
}

// drop removes the oldest batch (written, or set aside by reject).
func (s *spool) drop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.files) == 0 {
		return nil
	}
	f := s.files[0]
	if err := os.Remove(s.path(f.seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.files = s.files[1:]
	s.bytes -= f.size
	return nil
}

// reject moves the oldest batch to dir/rejected for an operator to look
// at: the server refuses it, and it must not block the batches behind it.
func (s *spool) reject() error {
	s.mu.Lock()
	if len(s.files) == 0 {
		s.mu.Unlock()
		return nil
	}
	src := s.path(s.files[0].seq)
	s.mu.Unlock()
	rejected := filepath.Join(s.dir, "rejected")
	if err := os.MkdirAll(rejected, 0o700); err != nil {
		return err
	}
	if err := os.Rename(src, filepath.Join(rejected, filepath.Base(src))); err != nil {
		return err
	}
	return s.drop()
}

// stats returns the number of batches and bytes queued.
func (s *spool) stats() (int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.files), s.bytes
}
