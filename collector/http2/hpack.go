package http2

import (
	"golang.org/x/net/http2/hpack"
)

// unknownName marks a dynamic-table entry whose content we never saw. It is
// not a valid header name token, so it cannot collide with a real field.
const unknownName = "?"

const (
	// initialTableSize is HPACK's table size before any SETTINGS (RFC 7541 §4.2).
	initialTableSize = 4096
	// maxTableSize bounds what a size update may ask for. We are a passive
	// observer: the peer already accepted the encoder's choice, so trust it
	// up to a size that bounds our memory.
	maxTableSize = 1 << 17
	// entryOverhead is what HPACK counts per entry besides name and value
	// (RFC 7541 §4.1): a table of size S holds at most S/32 entries.
	entryOverhead = 32
	// unknownSizePlaceholders fill a table whose encoder's size is unknown
	// (joined midway, no size update seen): enough entries that any index
	// a 64 KiB table can hold lands on one.
	unknownSizePlaceholders = 64 << 10 / entryOverhead
	// placeholderLen is the encoding of one placeholder: literal with
	// incremental indexing, new name unknownName, empty value.
	placeholderLen = 4
)

// placeholderBlock inserts up to maxTableSize/entryOverhead placeholders;
// a reset writes the prefix it needs.
var placeholderBlock = func() []byte {
	const n = maxTableSize / entryOverhead
	b := make([]byte, 0, n*placeholderLen)
	for range n {
		b = append(b, 0x40, 0x01, unknownName[0], 0x00)
	}
	return b
}()

// blockDecoder is the HPACK decoding state of one direction of a connection.
//
// When the agent joins a connection mid-way, or loses records, the dynamic
// table's content is unknown. Rather than give up, the table is filled with
// placeholders: the encoder only references entries that exist, entries are
// ordered newest first, and every entry inserted after the reset is known,
// so a reference either resolves to a field we saw inserted (exact) or to a
// placeholder (reported unknown) — never to a wrong field. The state heals by
// itself as the encoder's table turns over.
//
// A reset costs one table insert per placeholder (≈ 100 ns each in x/net's
// table, which also keeps the encoder's lookup maps), so the table is
// filled only as deep as the encoder's can reach: S/32 entries for the
// largest size S the encoder has signalled (4096 by default: 128 entries).
// Filling a 64 KiB table on every loss made each reset cost ≈ 200 µs and
// 100 KiB of garbage: at saturation, when records are lost, the agent fell
// further behind with every reset (2026-12-03, pprof: 30 % of the agent's
// CPU in the placeholder inserts, 25 % in GC).
type blockDecoder struct {
	dec     *hpack.Decoder
	fields  []hpack.HeaderField
	partial bool // placeholders may still be referenced
	// encoderMax is the largest dynamic table size the encoder has
	// signalled (RFC 7541 §6.3) or the initial 4096 when the connection
	// was followed from its start; 0 when unknown.
	encoderMax uint64
}

func newBlockDecoder(joinedMidway bool) *blockDecoder {
	d := &blockDecoder{}
	if joinedMidway {
		d.resetUnknown()
	} else {
		d.encoderMax = initialTableSize
		d.dec = hpack.NewDecoder(initialTableSize, d.emit)
		d.dec.SetAllowedMaxDynamicTableSize(maxTableSize)
	}
	return d
}

// placeholders is how many entries the encoder's table can hold at most.
// A size update lost with other records can have raised it unseen: then a
// reference past the placeholders fails to decode (reported truncated,
// and reset again), it never resolves to a wrong field.
func (d *blockDecoder) placeholders() int {
	if d.encoderMax == 0 {
		return unknownSizePlaceholders
	}
	return int(min(d.encoderMax, maxTableSize)+entryOverhead-1) / entryOverhead
}

func (d *blockDecoder) emit(f hpack.HeaderField) { d.fields = append(d.fields, f) }

// resetUnknown forgets the dynamic table: every old index becomes unknown.
func (d *blockDecoder) resetUnknown() {
	d.dec = hpack.NewDecoder(maxTableSize, d.emit)
	d.dec.SetAllowedMaxDynamicTableSize(maxTableSize)
	d.dec.SetEmitEnabled(false)
	if _, err := d.dec.Write(placeholderBlock[:d.placeholders()*placeholderLen]); err != nil {
		panic("hpack placeholder block: " + err.Error()) // a constant input: cannot fail
	}
	d.dec.SetEmitEnabled(true)
	d.partial = true
}

// decodedBlock is one decoded header block.
type decodedBlock struct {
	fields []hpack.HeaderField
	// truncated: decoding stopped at an error; fields holds what came before
	// it (exact), the rest of the block is unknown.
	truncated bool
}

// decode decodes one complete header block. Fields that resolved to a
// placeholder keep unknownName as name (or value) so callers can tell.
func (d *blockDecoder) decode(block []byte) decodedBlock {
	if size, ok := leadingSizeUpdate(block); ok {
		d.encoderMax = max(d.encoderMax, size)
	}
	d.fields = d.fields[:0]
	_, err := d.dec.Write(block)
	if err == nil {
		err = d.dec.Close()
	}
	// The fields are the decoder's own slice, valid until the next block:
	// parseFields copies what it keeps, so no copy per block here.
	out := decodedBlock{fields: d.fields}
	if err != nil {
		// Inserts after the failure point were not applied: the table no
		// longer matches the encoder's.
		out.truncated = true
		d.resetUnknown()
	}
	return out
}

// leadingSizeUpdate returns the largest dynamic table size update at the
// start of a header block (RFC 7541 §6.3: "001" and a 5-bit prefix
// integer, only before the first field). x/net's decoder applies them but
// does not say what they were.
func leadingSizeUpdate(block []byte) (size uint64, ok bool) {
	for len(block) > 0 && block[0]&0xe0 == 0x20 {
		v, n := prefixInt(block, 5)
		if n == 0 {
			break // truncated: the decoder reports it
		}
		size, ok, block = max(size, v), true, block[n:]
	}
	return size, ok
}

// prefixInt decodes an HPACK integer with an n-bit prefix (RFC 7541
// §5.1); 0 bytes read when it is truncated or longer than 64 bits.
func prefixInt(b []byte, n uint) (v uint64, read int) {
	mask := uint64(1)<<n - 1
	v = uint64(b[0]) & mask
	if v < mask {
		return v, 1
	}
	for i, shift := 1, uint(0); i < len(b) && shift < 63; i, shift = i+1, shift+7 {
		v += uint64(b[i]&0x7f) << shift
		if b[i]&0x80 == 0 {
			return v, i + 1
		}
	}
	return 0, 0
}
