package translator

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// lookup finds key on the data point, then the scope, then the resource.
func (c *callCtx) lookup(p *point, key string) (pcommon.Value, bool) {
	if v, ok := p.attrs.Get(key); ok {
		return v, true
	}
	if v, ok := c.scope.Attributes().Get(key); ok {
		return v, true
	}
	return c.res.Get(key)
}

type valStatus uint8

const (
	valOK valStatus = iota
	valMissing
	valInvalid
)

// appendValues appends the filter values an attribute gives; empty strings
// and empty slices are missing.
func appendValues(dst []string, v pcommon.Value) ([]string, valStatus) {
	if v.Type() != pcommon.ValueTypeSlice {
		s, st := scalar(v)
		if st != valOK {
			return dst, st
		}
		return append(dst, s), valOK
	}
	sl := v.Slice()
	n := len(dst)
	for i := 0; i < sl.Len(); i++ {
		s, st := scalar(sl.At(i))
		switch st {
		case valInvalid:
			return dst, valInvalid
		case valOK:
			dst = append(dst, s)
		}
	}
	if len(dst) == n {
		return dst, valMissing
	}
	return dst, valOK
}

// scalar renders a non-slice attribute value as a string.
func scalar(v pcommon.Value) (string, valStatus) {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		if v.Str() == "" {
			return "", valMissing
		}
		return v.Str(), valOK
	case pcommon.ValueTypeInt:
		return strconv.FormatInt(v.Int(), 10), valOK
	case pcommon.ValueTypeDouble:
		return formatDouble(v.Double()), valOK
	case pcommon.ValueTypeBool:
		return strconv.FormatBool(v.Bool()), valOK
	case pcommon.ValueTypeEmpty:
		return "", valMissing
	}
	return "", valInvalid
}

// formatDouble prints plain decimals, with an exponent only for magnitudes
// where a plain decimal would be absurdly long.
func formatDouble(f float64) string {
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// The aggregation key is raw and cheap: 2-byte stream index, 8-byte bucket
// start, then the element and each Filter dimension's values (sorted,
// deduplicated, invalid UTF-8 replaced as the JSON encoding does), length
// prefixed. Static dimensions are the same for the whole stream and left
// out. Equal raw keys are equal record keys; the JSON record key is built
// once per distinct raw key, in flush.

// buildKey resolves the element and filter of stream s for p and writes the
// raw aggregation key to t.keyBuf, or says why the pair is dropped.
func (t *Translator) buildKey(c *callCtx, s *stream, p *point, bucket int64) DropReason {
	elem := ""
	if v, ok := c.lookup(p, s.ElementName); ok {
		var st valStatus
		if v.Type() == pcommon.ValueTypeSlice {
			if t.elemVals, st = appendValues(t.elemVals[:0], v); st == valOK && len(t.elemVals) != 1 {
				st = valInvalid // an element is one value
			}
			if st == valOK {
				elem = t.elemVals[0]
			}
		} else {
			elem, st = scalar(v)
		}
		if st == valInvalid {
			return DropInvalidAttribute
		}
	}
	if elem == "" {
		return DropMissingElement
	}
	elem = validUTF8(elem)
	b := append(t.keyBuf[:0], byte(s.idx>>8), byte(s.idx))
	b = binary.LittleEndian.AppendUint64(b, uint64(bucket))
	b = appendStr(b, elem)
	size := s.overhead + jsonBound(elem)
	for i := range s.filters {
		f := &s.filters[i]
		f.vals = f.vals[:0]
		st := valMissing
		if v, ok := c.lookup(p, f.attr); ok {
			f.vals, st = appendValues(f.vals, v)
		}
		switch {
		case st == valInvalid:
			return DropInvalidAttribute
		case st == valMissing && f.def == "":
			return DropMissingFilterValue
		case st == valMissing:
			f.vals = append(f.vals, f.def)
		}
		if len(f.vals) > 1 {
			for j, v := range f.vals {
				f.vals[j] = validUTF8(v)
			}
			slices.Sort(f.vals)
			f.vals = slices.Compact(f.vals)
		} else {
			f.vals[0] = validUTF8(f.vals[0])
		}
		if len(f.vals) > record.MaxValuesPerKey {
			return DropTooManyFilterValues
		}
		b = binary.AppendUvarint(b, uint64(len(f.vals)))
		for _, v := range f.vals {
			b = appendStr(b, v)
			size += jsonBound(v)
		}
	}
	t.keyBuf = b
	if size <= record.MaxEncodedBytes {
		return ""
	}
	// Near the size limit: encode to know.
	var err error
	if t.jsonBuf, err = record.AppendKey(t.jsonBuf[:0], s.record(bucket, elem)); errors.Is(err, record.ErrRecordTooLarge) {
		return DropRecordTooLarge
	} else if err != nil {
		return DropInvalidAttribute // not reached: the checks above come first
	}
	return ""
}

// jsonBound bounds the encoded size of one string in a record: each byte
// takes at most 6 (\u00XX or \ufffd), plus quotes and a comma.
func jsonBound(s string) int { return 6*len(s) + 3 }

// validUTF8 replaces each invalid byte by U+FFFD, as record.AppendJSONString does.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r) // RuneError for an invalid byte
		i += n
	}
	return b.String()
}

// record returns the record of s with its resolved filter values.
func (s *stream) record(bucket int64, elem string) record.Record {
	s.dims = s.dims[:0]
	for i := range s.filters {
		s.dims = append(s.dims, record.Dimension{Key: s.filters[i].dim, Values: s.filters[i].vals})
	}
	s.dims = append(s.dims, s.static...)
	return record.Record{Timestamp: time.Unix(0, bucket), Granularity: s.Granularity, ElementName: elem, Filter: s.dims}
}

// setKeyBucket rewrites the bucket start in t.keyBuf.
func (t *Translator) setKeyBucket(bucket int64) {
	binary.LittleEndian.PutUint64(t.keyBuf[2:], uint64(bucket))
}

// aggEntry is one record being aggregated. Entries outlive a call, so that
// a key seen again in the next call (the usual case: the same customers
// every export interval) is neither allocated nor encoded again.
type aggEntry struct {
	raw   string // the map key
	v     float64
	epoch uint64     // call that last touched it
	key   record.Key // JSON key, encoded on first flush
	ref   uint64     // the caller's, through Output.Ref
}

// add adds v to the record under t.keyBuf.
func (t *Translator) add(v float64) {
	e := t.agg[string(t.keyBuf)]
	if e == nil {
		e = &aggEntry{raw: string(t.keyBuf)}
		t.agg[e.raw] = e
	}
	if e.epoch != t.epoch {
		e.epoch, e.v = t.epoch, 0
		t.touched = append(t.touched, e)
	}
	e.v += v
}

// Bounds of the aggregation entries kept between calls: a key not seen for
// aggIdleCalls calls is forgotten (checked every aggIdleCalls calls), and
// past maxAggEntries every key not seen in this call is. Exports often
// carry a part of the keys each (a fleet of clients, each exporting its
// own), so a key must survive a few calls without it to be reused.
const (
	aggIdleCalls  = 16
	maxAggEntries = 1 << 18
)

func (t *Translator) evictAgg() {
	switch {
	case len(t.agg) > maxAggEntries:
		for k, e := range t.agg {
			if e.epoch != t.epoch {
				delete(t.agg, k)
			}
		}
	case t.epoch%aggIdleCalls == 0:
		for k, e := range t.agg {
			if t.epoch-e.epoch >= aggIdleCalls {
				delete(t.agg, k)
			}
		}
	}
}

// decode fills s's filter values from a raw key and returns the record.
func (t *Translator) decode(k string) (*stream, record.Record) {
	s := t.streams[int(k[0])<<8|int(k[1])]
	var bucket uint64
	for i := 9; i >= 2; i-- {
		bucket = bucket<<8 | uint64(k[i])
	}
	elem, rest := readStr(k[10:])
	for i := range s.filters {
		f := &s.filters[i]
		n, r := readUvarint(rest)
		f.vals, rest = f.vals[:0], r
		for range n {
			var v string
			v, rest = readStr(rest)
			f.vals = append(f.vals, v)
		}
	}
	return s, s.record(int64(bucket), elem)
}

func readUvarint(s string) (uint64, string) {
	var x uint64
	for i, shift := 0, uint(0); i < len(s); i, shift = i+1, shift+7 {
		x |= uint64(s[i]&0x7f) << shift
		if s[i] < 0x80 {
			return x, s[i+1:]
		}
	}
	return x, ""
}

func readStr(s string) (string, string) {
	n, rest := readUvarint(s)
	return rest[:n], rest[n:]
}

// Output is one record of a translation: distinct (Stream, Key) within it.
type Output struct {
	Stream string
	Key    record.Key
	Value  float64
	// Ref is a word the translator keeps with the key for its caller, from
	// call to call while the key is in use (it starts at 0, and is 0 again
	// after the key was idle): the delivery core caches its ledger entry
	// there, so a key seen again needs no lookup.
	Ref *uint64
}

// flush encodes the records aggregated in this call as outputs. A negative
// total (samples of a gauge or an up-down counter with value: sum) is an
// output too: the delivery core nets it per key and bucket with the rest
// of the bucket's usage, so that the total does not depend on how points
// were split into exports. Zero and out-of-range totals are dropped.
func (t *Translator) flush(st *Stats) []Output {
	out := t.out[:0]
	for _, e := range t.touched {
		switch v := e.v; {
		case !finite(v):
			st.drop(DropValueOutOfRange, 0)
		case v == 0:
			st.drop(DropNonPositive, 0)
		case !record.ValueFits(v):
			st.drop(DropValueOutOfRange, v)
		default:
			if e.key == "" {
				_, r := t.decode(e.raw)
				var err error
				if t.jsonBuf, err = record.AppendKey(t.jsonBuf[:0], r); err != nil {
					st.drop(DropRecordTooLarge, v) // not reached: buildKey checked
					continue
				}
				e.key = record.Key(t.jsonBuf)
			}
			out = append(out, Output{Stream: t.streams[int(e.raw[0])<<8|int(e.raw[1])].Name, Key: e.key, Value: v, Ref: &e.ref})
		}
	}
	t.evictAgg()
	clear(t.touched)
	t.touched = t.touched[:0]
	t.epoch++
	t.out = out
	return out
}
