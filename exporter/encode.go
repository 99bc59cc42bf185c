package exporter

import (
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// Request size limits.
const (
	// DefaultMaxBytes keeps a body under CloudZero's 5 MB limit whether that
	// means 5,000,000 or 5 MiB bytes: 5 MiB minus 256 KiB = 4,980,736.
	DefaultMaxBytes = 5*1024*1024 - 256*1024
	// DefaultMaxRecords is 5,000 records per request. CloudZero says 5 MB is
	// roughly 10,000 records of 512 bytes and its own tools send 3,000. With
	// typical records of 150-300 bytes, 5,000 gives bodies of 1-1.5 MB: well
	// under the byte limit even for long filters, half as many requests as
	// 3,000 (many small requests draw 503 "slow down"), and a failed chunk
	// re-sends a modest amount.
	DefaultMaxRecords = 5000
	// MinMaxBytes is the smallest byte limit accepted: one record of
	// record.MaxEncodedBytes must fit.
	MinMaxBytes = record.MaxEncodedBytes + len(bodyPrefix) + len(bodySuffix)
)

const (
	bodyPrefix = `{"records":[`
	bodySuffix = `]}`
)

// Entry is one record of a stream: its canonical key and value.
type Entry struct {
	Key   record.Key
	Value float64
}

// Body is one request body: records of one stream, {"records":[...]}.
type Body struct {
	Stream  string
	Bytes   []byte
	Records int
	Entries []Entry // the records in Bytes, in order
}

// Chunker cuts a stream's records into request bodies of at most MaxBytes
// bytes and MaxRecords records (0 = the defaults). A body always holds at
// least one record.
type Chunker struct {
	MaxBytes   int
	MaxRecords int
}

func (c Chunker) limits() (maxBytes, maxRecords int) {
	maxBytes, maxRecords = c.MaxBytes, c.MaxRecords
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if maxRecords <= 0 {
		maxRecords = DefaultMaxRecords
	}
	return max(maxBytes, MinMaxBytes), maxRecords
}

// SortedEntries appends the records of one stream (record.Set.Records) to
// dst, sorted by key so that chunks, and therefore retries, are
// reproducible. Values that are not finite and > 0 are skipped and counted:
// CloudZero rejects them.
func SortedEntries(dst []Entry, recs map[record.Key]float64) (entries []Entry, skipped int) {
	start := len(dst)
	dst = slices.Grow(dst, len(recs))
	for k, v := range recs {
		if !validValue(v) {
			skipped++
			continue
		}
		dst = append(dst, Entry{k, v})
	}
	slices.SortFunc(dst[start:], func(a, b Entry) int { return strings.Compare(string(a.Key), string(b.Key)) })
	return dst, skipped
}

func validValue(v float64) bool { return v > 0 && !math.IsInf(v, 1) }

// Encode appends to dst one body holding the longest prefix of entries that
// fits the limits, and at most maxRecords records when maxRecords > 0. It
// returns the extended buffer and how many entries the body holds (at least
// one when entries is not empty).
func (c Chunker) Encode(dst []byte, entries []Entry, maxRecords int) ([]byte, int) {
	maxBytes, limit := c.limits()
	if maxRecords > 0 {
		limit = min(limit, maxRecords)
	}
	start := len(dst)
	dst = append(dst, bodyPrefix...)
	n := 0
	for n < len(entries) && n < limit {
		mark := len(dst)
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = record.AppendRecord(dst, entries[n].Key, entries[n].Value)
		if n > 0 && len(dst)-start+len(bodySuffix) > maxBytes {
			dst = dst[:mark]
			break
		}
		n++
	}
	return append(dst, bodySuffix...), n
}

// AppendBody appends one body holding all entries, whatever its size.
func AppendBody(dst []byte, entries []Entry) []byte {
	dst = append(dst, bodyPrefix...)
	for i, e := range entries {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = record.AppendRecord(dst, e.Key, e.Value)
	}
	return append(dst, bodySuffix...)
}

// Bodies encodes all records of one stream into bodies within the limits,
// each with its own buffer. skipped counts values not sent (see
// SortedEntries). The Sender encodes one body at a time into a reused
// buffer instead.
func (c Chunker) Bodies(stream string, recs map[record.Key]float64) (bodies []Body, skipped int) {
	entries, skipped := SortedEntries(nil, recs)
	for len(entries) > 0 {
		b, n := c.Encode(nil, entries, 0)
		bodies = append(bodies, Body{Stream: stream, Bytes: b, Records: n, Entries: entries[:n:n]})
		entries = entries[n:]
	}
	return bodies, skipped
}

// Buffers reused across Send calls; bodies are up to ~5 MB.
var (
	bufPool     = sync.Pool{New: func() any { return new([]byte) }}
	entriesPool = sync.Pool{New: func() any { return new([]Entry) }}
)
