package http2

// ErrorKind names a decode problem.
type ErrorKind uint8

const (
	ErrNonContiguous      ErrorKind = iota // header payload pieces out of order
	ErrBadPadding                          // pad length or priority larger than the frame
	ErrOrphanContinuation                  // CONTINUATION without an open block
	ErrUnterminatedBlock                   // a new block began before END_HEADERS
	ErrBlockTooLarge                       // header block over MaxHeaderBlock
	ErrHPACK                               // HPACK decoding failed part way
	NumErrorKinds
)

var errorNames = [NumErrorKinds]string{
	"non_contiguous", "bad_padding", "orphan_continuation",
	"unterminated_block", "block_too_large", "hpack",
}

func (k ErrorKind) String() string { return errorNames[k] }

// Stats counts what the decoder could not report exactly. One Stats may be
// shared by many connections (one goroutine).
type Stats struct {
	Errors              [NumErrorKinds]uint64
	UnknownFields       uint64 // header fields that referenced unknown HPACK state
	StreamsJoinedMidway uint64 // exchanges whose request preceded our view
	StreamsLost         uint64 // open exchanges dropped after record loss or an undecodable block
	StreamsEvicted      uint64 // exchanges evicted by the per-connection limit
}
