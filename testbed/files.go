package testbed

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteFile replaces a file atomically (a temporary file renamed over
// it), as editors and configuration managers do: a watcher never reads
// half of it.
func WriteFile(tb testing.TB, path, content string) {
	tb.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}
