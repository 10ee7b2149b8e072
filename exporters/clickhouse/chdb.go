package clickhouse

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/ebitengine/purego"
)

// The chDB C API (chdb.h of chdb 3.x), bound at run time.
//
// github.com/chdb-io/chdb-go binds the same functions, but in a package
// init that panics when libchdb.so is absent. Linked into sextant, that
// would crash every command (agent, observe, …) on hosts without the 566 MB
// library, before the relay could fetch it. So sextant binds the handful of
// functions it needs itself, after the library is known to be there.
var chdbAPI struct {
	once sync.Once
	err  error

	connect       func(argc int, argv []*byte) unsafe.Pointer // chdb_connection *
	closeConn     func(conn unsafe.Pointer)
	query         func(conn unsafe.Pointer, query string, format string) unsafe.Pointer // chdb_result *
	destroyResult func(res unsafe.Pointer)
	resultBuffer  func(res unsafe.Pointer) *byte
	resultLength  func(res unsafe.Pointer) uintptr
	resultError   func(res unsafe.Pointer) string
}

func loadChDB(libPath string) error {
	chdbAPI.once.Do(func() {
		lib, err := purego.Dlopen(libPath, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			chdbAPI.err = fmt.Errorf("load chDB %s: %w", libPath, err)
			return
		}
		defer func() {
			if r := recover(); r != nil { // RegisterLibFunc panics on a missing symbol
				chdbAPI.err = fmt.Errorf("load chDB %s: %v (want chdb 3.x)", libPath, r)
			}
		}()
		purego.RegisterLibFunc(&chdbAPI.connect, lib, "chdb_connect")
		purego.RegisterLibFunc(&chdbAPI.closeConn, lib, "chdb_close_conn")
		purego.RegisterLibFunc(&chdbAPI.query, lib, "chdb_query")
		purego.RegisterLibFunc(&chdbAPI.destroyResult, lib, "chdb_destroy_query_result")
		purego.RegisterLibFunc(&chdbAPI.resultBuffer, lib, "chdb_result_buffer")
		purego.RegisterLibFunc(&chdbAPI.resultLength, lib, "chdb_result_length")
		purego.RegisterLibFunc(&chdbAPI.resultError, lib, "chdb_result_error")
	})
	return chdbAPI.err
}

// chdbConn is the process's one chDB connection (the engine allows one).
type chdbConn struct {
	mu   sync.Mutex     // chDB runs one query at a time per connection
	conn unsafe.Pointer // chdb_connection *
}

var chdbOpen struct {
	sync.Mutex
	path string
}

// openChDB starts the engine with its data under dir; args are more
// clickhouse-local options.
func openChDB(libPath, dir string, args ...string) (*chdbConn, error) {
	if err := loadChDB(libPath); err != nil {
		return nil, err
	}
	quietStdin.Do(giveQuietStdin)
	chdbOpen.Lock()
	defer chdbOpen.Unlock()
	if chdbOpen.path != "" {
		return nil, fmt.Errorf("chDB: already open on %s (one embedded engine per process)", chdbOpen.path)
	}
	args = append([]string{"clickhouse", "--path=" + dir}, args...)
	argv := make([]*byte, len(args))
	for i, a := range args {
		b := append([]byte(a), 0)
		argv[i] = &b[0]
	}
	conn := chdbAPI.connect(len(argv), argv)
	if conn == nil {
		return nil, fmt.Errorf("chDB: cannot open %s", dir)
	}
	chdbOpen.path = dir
	return &chdbConn{conn: conn}, nil
}

// query runs one statement and returns its output in format.
func (c *chdbConn) query(sql, format string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil, errors.New("chDB: closed")
	}
	// chdb_connection * points at the handle that chdb_query takes.
	res := chdbAPI.query(*(*unsafe.Pointer)(c.conn), sql, format)
	if res == nil {
		return nil, nil
	}
	defer chdbAPI.destroyResult(res)
	if msg := chdbAPI.resultError(res); msg != "" {
		c.flush()
		return nil, errors.New(msg)
	}
	n := chdbAPI.resultLength(res)
	if n == 0 {
		return nil, nil
	}
	// Copy: the buffer belongs to the result.
	return append([]byte(nil), unsafe.Slice(chdbAPI.resultBuffer(res), n)...), nil
}

// flush: after a statement fails midway (timeout, memory limit), chDB
// 3.4 keeps the output it had produced and prepends it to the answer of the
// next statement (measured: the next query's JSON began with the failed
// count()'s header). One throwaway statement takes it.
func (c *chdbConn) flush() {
	if res := chdbAPI.query(*(*unsafe.Pointer)(c.conn), "SELECT 1", "TabSeparated"); res != nil {
		chdbAPI.destroyResult(res)
	}
}

func (c *chdbConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return
	}
	chdbAPI.closeConn(c.conn)
	c.conn = nil
	chdbOpen.Lock()
	chdbOpen.path = ""
	chdbOpen.Unlock()
}

// quietStdin: the embedded engine, like clickhouse-local, takes a standard
// input that is not a terminal or pipe (a daemon's or CI's /dev/null) as
// external data for INSERT … FORMAT, and then refuses inserts that carry
// their rows inline ("both inlined and external data"). A pipe nobody
// writes to is an input with no data: give the process one, once.
var quietStdin sync.Once

func giveQuietStdin() {
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
		return
	}
	r, w, err := os.Pipe()
	if err != nil {
		return
	}
	if err := syscall.Dup2(int(r.Fd()), 0); err != nil {
		r.Close()
		w.Close()
		return
	}
	r.Close()
	quietStdinWriter = w // kept open for the life of the process: reads block, never EOF
}

var quietStdinWriter *os.File
