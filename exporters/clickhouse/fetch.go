package clickhouse

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ChDBPackage is the npm package that carries the chDB library sextant is
// built against.
const ChDBPackage = "chdb@3.4.0"

// chdbLibRel is where npm puts the library inside the install prefix.
const chdbLibRel = "node_modules/@chdb/lib-linux-x64-gnu/libchdb.so"

// DefaultChDBDir is the cache directory the library is fetched into:
// $XDG_CACHE_HOME/sextant/chdb or ~/.cache/sextant/chdb.
func DefaultChDBDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "sextant", "chdb")
}

// EnsureChDB returns the path of libchdb.so, fetching it once with npm into
// dir (DefaultChDBDir when empty) when it is not there yet. CHDB_LIB_PATH,
// when set, names the library to use and nothing is fetched. Progress (the
// download is ≈570 MB) is written to progress.
func EnsureChDB(ctx context.Context, dir string, progress io.Writer) (string, error) {
	if p := os.Getenv("CHDB_LIB_PATH"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("CHDB_LIB_PATH: %w", err)
		}
		return p, nil
	}
	if dir == "" {
		dir = DefaultChDBDir()
	}
	lib := filepath.Join(dir, chdbLibRel)
	if _, err := os.Stat(lib); err == nil {
		return lib, nil
	}
	if progress == nil {
		progress = io.Discard
	}
	howTo := fmt.Sprintf(`the embedded flow store needs libchdb.so (npm package %s, ≈570 MB). Either:
  - install Node.js/npm (Debian: apt-get install npm) and run: npm install --prefix %s %s
  - or set CHDB_LIB_PATH to an existing libchdb.so (chdb 3.x)
  - or use a ClickHouse server instead of the embedded store (--clickhouse-addr host:9000)`, ChDBPackage, dir, ChDBPackage)
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("npm not found: %s", howTo)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("chDB cache %s: %w", dir, err)
	}
	fmt.Fprintf(progress, "fetching %s (≈570 MB, once) into %s\n", ChDBPackage, dir)
	// npm's download cache inside dir makes the download visible to the
	// progress lines below; it is removed afterwards.
	cache := filepath.Join(dir, ".npm-cache")
	defer os.RemoveAll(cache)
	cmd := exec.CommandContext(ctx, npm, "install", "--prefix", dir, "--cache", cache, "--no-save", "--no-audit", "--no-fund",
		"--no-package-lock", "--loglevel=error", ChDBPackage)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("npm install %s: %w\n%s", ChDBPackage, err, howTo)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case err := <-done:
			if err != nil {
				return "", fmt.Errorf("npm install %s: %w\n%s\n%s", ChDBPackage, err, strings.TrimSpace(out.String()), howTo)
			}
			if _, err := os.Stat(lib); err != nil {
				return "", fmt.Errorf("npm install %s finished but %s is missing (is this linux/x86-64 with glibc?)\n%s", ChDBPackage, lib, howTo)
			}
			fmt.Fprintf(progress, "fetched %s in %s\n", ChDBPackage, time.Since(start).Round(time.Second))
			return lib, nil
		case <-tick.C:
			// npm is silent for minutes on a slow link: show the bytes
			// that arrived so far.
			fmt.Fprintf(progress, "  … %d MB\n", dirSize(dir)>>20)
		}
	}
}

// dirSize sums the sizes of the files under dir, best effort (npm moves
// files while it works).
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil && d.Type().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}
