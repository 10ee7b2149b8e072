package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// settle is how long the watcher waits after the last change of a burst
// before reading: editors write a file in several steps (truncate, write,
// rename), and reading in the middle would reject a half-written file.
const settle = 100 * time.Millisecond

// Rejection is a file whose latest content was rejected; the policies of
// its last good content (if any) stay in force.
type Rejection struct {
	File   string
	Errors []error
	Time   time.Time
}

// Snapshot is the policies in force: for every file, its latest good
// content, and the files whose latest content was rejected.
type Snapshot struct {
	Policies   []*Policy // in file order, then document order
	Rejections []Rejection
	// Changed says whether Policies differ from the previous snapshot's.
	Changed bool
}

// IsPolicyFile says whether a directory entry is read as policies.
func IsPolicyFile(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false // editors' swap and backup files
	}
	switch filepath.Ext(name) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// ReadFile parses one file. A file is applied whole or not at all: any
// rejected document rejects the file.
func ReadFile(path string) ([]*Policy, []error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, []error{fmt.Errorf("%s: %w", path, err)}
	}
	ps, errs := Parse(path, b)
	if len(errs) > 0 {
		return nil, errs
	}
	// Two documents with the same name in one file: the second would
	// silently replace the first in Kubernetes; here it is an error.
	seen := map[string]*Policy{}
	for _, p := range ps {
		if q, ok := seen[p.ID()]; ok {
			return nil, []error{&FieldError{File: path, Line: p.Line, Reason: fmt.Sprintf("%s is defined twice (also at line %d)", p.ID(), q.Line)}}
		}
		seen[p.ID()] = p
	}
	return ps, nil
}

// Dir holds the last good content of each policy file of a directory.
type Dir struct {
	path string

	mu       sync.Mutex
	good     map[string][]*Policy // by file
	mtimes   map[string]fileStamp // content last read
	rejected map[string]Rejection // by file
	last     []*Policy
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// NewDir reads nothing yet: Load does.
func NewDir(path string) *Dir {
	return &Dir{path: path, good: map[string][]*Policy{}, mtimes: map[string]fileStamp{}, rejected: map[string]Rejection{}}
}

// Path is the directory.
func (d *Dir) Path() string { return d.path }

// Load reads the directory again: changed files are parsed; a file that
// parses replaces its previous policies, a file that does not keeps them
// and is listed as rejected; a removed file's policies go. A policy
// defined in two files is rejected in the second one (by name order).
func (d *Dir) Load() (Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	entries, err := os.ReadDir(d.path)
	if errors.Is(err, os.ErrNotExist) {
		entries, err = nil, nil // no directory: no policies
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("read policy directory %s: %w", d.path, err)
	}
	present := map[string]bool{}
	for _, e := range entries {
		if e.IsDir() || !IsPolicyFile(e.Name()) {
			continue
		}
		p := filepath.Join(d.path, e.Name())
		present[p] = true
		info, err := e.Info()
		if err != nil {
			continue
		}
		st := fileStamp{info.ModTime(), info.Size()}
		if old, ok := d.mtimes[p]; ok && old == st {
			continue
		}
		d.mtimes[p] = st
		ps, errs := ReadFile(p)
		if len(errs) > 0 {
			d.rejected[p] = Rejection{File: p, Errors: errs, Time: time.Now()}
			continue
		}
		delete(d.rejected, p)
		d.good[p] = ps
	}
	for p := range d.good {
		if !present[p] {
			delete(d.good, p)
		}
	}
	for p := range d.mtimes {
		if !present[p] {
			delete(d.mtimes, p)
			delete(d.rejected, p)
		}
	}
	files := make([]string, 0, len(d.good))
	for p := range d.good {
		files = append(files, p)
	}
	slices.Sort(files)
	var snap Snapshot
	owner := map[string]string{}
	for _, f := range files {
		var keep []*Policy
		var dup []error
		for _, p := range d.good[f] {
			if o, ok := owner[p.ID()]; ok {
				dup = append(dup, &FieldError{File: f, Line: p.Line, Reason: fmt.Sprintf("%s is already defined in %s", p.ID(), o)})
				continue
			}
			owner[p.ID()] = f
			keep = append(keep, p)
		}
		if len(dup) > 0 {
			snap.Rejections = append(snap.Rejections, Rejection{File: f, Errors: dup, Time: time.Now()})
		}
		snap.Policies = append(snap.Policies, keep...)
	}
	for _, r := range d.rejected {
		snap.Rejections = append(snap.Rejections, r)
	}
	slices.SortFunc(snap.Rejections, func(a, b Rejection) int { return strings.Compare(a.File, b.File) })
	snap.Changed = !slices.Equal(snap.Policies, d.last)
	d.last = snap.Policies
	return snap, nil
}

// Watch calls onChange after every settled burst of changes in the
// directory (and in the extra files given, e.g. the endpoints file) until
// ctx is done. It watches the parent when the directory does not exist
// yet, so that creating it is seen.
func Watch(ctx context.Context, paths []string, onChange func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policies: %w", err)
	}
	defer w.Close()
	watched := map[string]bool{}
	add := func() {
		for _, p := range paths {
			// Watch a directory itself, a file's directory (editors replace
			// files by rename, which a watch on the file would lose).
			dir := p
			if info, err := os.Stat(p); err != nil || !info.IsDir() {
				dir = filepath.Dir(p)
			}
			for dir != "/" {
				if _, err := os.Stat(dir); err == nil {
					break
				}
				dir = filepath.Dir(dir)
			}
			if !watched[dir] {
				if err := w.Add(dir); err == nil {
					watched[dir] = true
				}
			}
		}
	}
	add()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			timer.Reset(settle)
		case _, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflow loses events, not the state: re-read.
			timer.Reset(settle)
		case <-timer.C:
			add() // a directory may have appeared
			onChange()
		}
	}
}
