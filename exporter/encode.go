package exporter

import (
	"sync"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// Request size limits.
const (
	// defaultMaxBytes keeps a body under CloudZero's 5 MB limit whether that
	// means 5,000,000 or 5 MiB bytes: 5 MiB minus 256 KiB = 4,980,736.
	defaultMaxBytes = 5*1024*1024 - 256*1024
	// DefaultMaxRecords is 5,000 records per request. CloudZero says 5 MB is
	// roughly 10,000 records of 512 bytes and its own tools send 3,000. With
	// typical records of 150-300 bytes, 5,000 gives bodies of 1-1.5 MB: well
	// under the byte limit even for long filters, half as many requests as
	// 3,000 (many small requests draw 503 "slow down"), and a failed chunk
	// re-sends a modest amount.
	DefaultMaxRecords = 5000
	// minMaxBytes is the smallest byte limit accepted: one record of
	// record.MaxEncodedBytes must fit.
	minMaxBytes = record.MaxEncodedBytes + len(bodyPrefix) + len(bodySuffix)
)

const (
	bodyPrefix = `{"records":[`
	bodySuffix = `]}`
)

// requestLimits holds the request limits: at most MaxBytes bytes and MaxRecords
// records (0 = the defaults).
type requestLimits struct {
	MaxBytes   int
	MaxRecords int
}

func (c requestLimits) limits() (maxBytes, maxRecords int) {
	maxBytes, maxRecords = c.MaxBytes, c.MaxRecords
	if maxBytes <= 0 {
		maxBytes = defaultMaxBytes
	}
	if maxRecords <= 0 {
		maxRecords = DefaultMaxRecords
	}
	return max(maxBytes, minMaxBytes), maxRecords
}

// appendEntries appends one request body holding es.
func appendEntries(dst []byte, es []sendEntry) []byte {
	dst = append(dst, bodyPrefix...)
	for i, e := range es {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = record.AppendRecord(dst, e.key, e.value)
	}
	return append(dst, bodySuffix...)
}

// Request bodies are up to ~5 MB: reuse their buffers.
var bufPool = sync.Pool{New: func() any { return new([]byte) }}
