package http1

import (
	"bytes"
	"errors"
	"strconv"
)

// view is what the kernel shipped of one read or write: the first bytes
// (head) and, for long chunks, the last bytes (tail). Bytes in between were
// moved by the process but not shipped: their positions are known, their
// values are not.
type view struct {
	head  []byte // bytes [0, len(head))
	tail  []byte // bytes [total-len(tail), total)
	total int64
}

// at returns byte i of the chunk when it was shipped.
func (v *view) at(i int64) (byte, bool) {
	if i < int64(len(v.head)) {
		return v.head[i], true
	}
	if t := v.total - int64(len(v.tail)); i >= t && i < v.total {
		return v.tail[i-t], true
	}
	return 0, false
}

// full reports whether every byte of the chunk was shipped.
func (v *view) full() bool { return int64(len(v.head)) == v.total }

// chunkState is where a chunked body walk stands.
type chunkState uint8

const (
	chunkSize    chunkState = iota // reading a chunk-size line
	chunkData                      // skipping chunk data
	chunkDataEnd                   // reading the CRLF after chunk data
	chunkTrailer                   // reading trailer fields after the last chunk
	chunkBlind                     // framing went out of view: watch for the terminator only
)

// lastChunk ends a chunked body without trailers. Once the walker has lost
// sight of the framing, a read ending in these bytes is taken as the end of
// the body (best effort, and the body size is then reported unknown).
const lastChunk = "0\r\n\r\n"

// maxChunkLine bounds chunk-size and trailer lines (net/http allows 4 KiB).
const maxChunkLine = 4 << 10

var errChunkFraming = errors.New("malformed chunked encoding")

// chunkWalker follows Transfer-Encoding: chunked framing over chunks of which
// only the head and tail are visible. Chunk data is skipped by count, so the
// size lines are all it needs to see; the kernel's head/tail split usually
// shows them because writers put each size line at the start of a write or
// right after the previous chunk's data. This walk is hand-written because
// net/http's chunked reader needs every byte.
type chunkWalker struct {
	state     chunkState
	line      []byte // partial size or trailer line
	remaining int64  // chunk data bytes left
	body      uint64 // data bytes seen, exact while state != chunkBlind
	recent    []byte // blind: the stream's last bytes, when shipped
}

func (w *chunkWalker) reset() {
	*w = chunkWalker{line: w.line[:0], recent: w.recent[:0]}
}

// blindEnd reports whether the stream, after v, ends with the last chunk.
// The bytes before v count when they and v were shipped contiguously, so
// a terminator split over short reads is still found.
func (w *chunkWalker) blindEnd(v *view) bool {
	if v.full() {
		w.recent = append(w.recent, v.head...)
	} else {
		w.recent = append(w.recent[:0], v.tail...)
	}
	if n := len(w.recent); n > len(lastChunk) {
		w.recent = append(w.recent[:0], w.recent[n-len(lastChunk):]...)
	}
	return string(w.recent) == lastChunk
}

// exact reports whether body is the exact body size so far.
func (w *chunkWalker) exact() bool { return w.state != chunkBlind }

// walk consumes v from off. It returns where the body ended in v (done) or
// v.total when the body goes on in later chunks.
func (w *chunkWalker) walk(v *view, off int64) (next int64, done bool, err error) {
	for off < v.total {
		switch w.state {
		case chunkBlind:
			return v.total, w.blindEnd(v), nil

		case chunkData:
			n := min(w.remaining, v.total-off)
			off += n
			w.remaining -= n
			w.body += uint64(n)
			if w.remaining == 0 {
				w.state = chunkDataEnd
			}

		default: // line-oriented states
			b, ok := v.at(off)
			if !ok {
				w.state = chunkBlind
				w.line, w.recent = w.line[:0], w.recent[:0]
				continue
			}
			off++
			if b != '\n' {
				if len(w.line) >= maxChunkLine {
					return off, false, errChunkFraming
				}
				w.line = append(w.line, b)
				continue
			}
			line := bytes.TrimSuffix(w.line, []byte("\r"))
			w.line = w.line[:0]
			switch w.state {
			case chunkSize:
				size, err := parseChunkSize(line)
				if err != nil {
					return off, false, err
				}
				if size == 0 {
					w.state = chunkTrailer
				} else {
					w.remaining = size
					w.state = chunkData
				}
			case chunkDataEnd:
				if len(line) != 0 {
					return off, false, errChunkFraming
				}
				w.state = chunkSize
			case chunkTrailer:
				if len(line) == 0 {
					return off, true, nil
				}
			}
		}
	}
	return off, false, nil
}

// parseChunkSize reads the hex size of a chunk-size line, ignoring
// chunk extensions.
func parseChunkSize(line []byte) (int64, error) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 16 {
		return 0, errChunkFraming
	}
	n, err := strconv.ParseUint(string(line), 16, 63)
	if err != nil {
		return 0, errChunkFraming
	}
	return int64(n), nil
}
