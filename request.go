package cloudzeroexporter

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// recordsRequest is the unit that rides exporterhelper's queue, batcher and
// retry: aggregated records. Merging two requests adds values of equal keys,
// so a batch waiting to be sent grows with distinct keys, not with points.
type recordsRequest struct {
	set   *record.Set
	bytes int // encoded size, cached: the persistent queue asks for it often; -1 = unknown
	// waiting is told how the number of records waiting to be sent changes
	// when merging folds equal keys together (for the aggregation_keys metric).
	waiting func(delta int)
}

var (
	_ xexporterhelper.Request             = (*recordsRequest)(nil)
	_ xexporterhelper.RequestErrorHandler = (*recordsRequest)(nil)
)

func newRecordsRequest(set *record.Set, waiting func(int)) *recordsRequest {
	if waiting == nil {
		waiting = func(int) {}
	}
	return &recordsRequest{set: set, bytes: -1, waiting: waiting}
}

func (r *recordsRequest) ItemsCount() int { return r.set.Len() }

func (r *recordsRequest) BytesSize() int {
	if r.bytes < 0 {
		r.bytes = 0
		for _, e := range r.entries() {
			r.bytes += record.EncodedLen(e.key, e.value) + 1
		}
	}
	return r.bytes
}

// MergeSplit merges other into r and splits the result into parts of at most
// maxSize (records or encoded bytes, per szt). exporterhelper's batcher ties
// the current batch's completion (and its persistent-queue items) to the
// first part only, so the first part holds all of r: r's records, other's
// records with the same keys (merged into them), then other's new records
// while they fit. The later parts hold only other's records.
func (r *recordsRequest) MergeSplit(_ context.Context, maxSize int, szt exporterhelper.RequestSizerType, other xexporterhelper.Request) ([]xexporterhelper.Request, error) {
	var incoming []entry
	if other != nil {
		o, ok := other.(*recordsRequest)
		if !ok {
			return nil, fmt.Errorf("cloudzero: cannot merge %T into a records request", other)
		}
		before := r.set.Len() + o.set.Len()
		r.bytes = -1
		for _, e := range o.entries() {
			if _, ok := r.set.Value(e.stream, e.key); ok || maxSize <= 0 {
				r.set.Add(e.stream, e.key, e.value)
			} else {
				incoming = append(incoming, e)
			}
		}
		r.waiting(r.set.Len() + len(incoming) - before)
	} else if maxSize > 0 && r.size(szt) > maxSize {
		// A request alone: any split will do (its completion waits for all parts).
		incoming = r.entries()
		r = newRecordsRequest(record.NewSet(), r.waiting)
	}

	parts := []xexporterhelper.Request{r}
	cur, curSize := r, r.size(szt)
	for _, e := range incoming {
		n := 1
		if szt == exporterhelper.RequestSizerTypeBytes {
			n = record.EncodedLen(e.key, e.value) + 1
		}
		if curSize > 0 && curSize+n > maxSize {
			cur, curSize = newRecordsRequest(record.NewSet(), r.waiting), 0
			parts = append(parts, cur)
		}
		cur.set.Add(e.stream, e.key, e.value)
		cur.bytes = -1
		curSize += n
	}
	return parts, nil
}

// OnError returns the part of the request still to be sent after a failure:
// the sender reports which chunks CloudZero accepted, so a retry re-sends only
// the others (sum adds up: re-sending an accepted chunk would count it twice).
func (r *recordsRequest) OnError(err error) xexporterhelper.Request {
	var u *unsentError
	if errors.As(err, &u) && u.unsent != nil {
		return newRecordsRequest(u.unsent, r.waiting)
	}
	return r
}

func (r *recordsRequest) size(szt exporterhelper.RequestSizerType) int {
	switch szt {
	case exporterhelper.RequestSizerTypeBytes:
		return r.BytesSize()
	case exporterhelper.RequestSizerTypeRequests:
		return 1
	default:
		return r.ItemsCount()
	}
}

type entry struct {
	stream string
	key    record.Key
	value  float64
}

// entries lists the records sorted by stream and key, so that splits and
// retries are deterministic.
func (r *recordsRequest) entries() []entry {
	out := make([]entry, 0, r.set.Len())
	for _, stream := range r.set.Streams() {
		for k, v := range r.set.Records(stream) {
			out = append(out, entry{stream, k, v})
		}
	}
	slices.SortFunc(out, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.stream, b.stream), cmp.Compare(a.key, b.key))
	})
	return out
}

// unsentError carries the records not accepted by CloudZero with the error.
type unsentError struct {
	err    error
	unsent *record.Set
}

func (e *unsentError) Error() string { return e.err.Error() }
func (e *unsentError) Unwrap() error { return e.err }

// requestEncoding serialises requests for the persistent queue:
// "CZR1", then per stream: name, record count, and per record: key, value bits.
// Strings are uvarint-length-prefixed.
type requestEncoding struct {
	// waiting is as in recordsRequest. The persistent queue reads every item
	// back from storage before it is batched, so a request starts counting
	// as waiting here (convert counts it only with the memory queue).
	waiting func(int)
}

var _ exporterhelper.QueueBatchEncoding[xexporterhelper.Request] = requestEncoding{}

const encodingMagic = "CZR1"

func (requestEncoding) Marshal(_ context.Context, req xexporterhelper.Request) ([]byte, error) {
	r, ok := req.(*recordsRequest)
	if !ok {
		return nil, fmt.Errorf("cloudzero: cannot marshal %T", req)
	}
	buf := make([]byte, 0, r.BytesSize()+64)
	buf = append(buf, encodingMagic...)
	for _, stream := range r.set.Streams() {
		recs := r.set.Records(stream)
		buf = appendString(buf, stream)
		buf = binary.AppendUvarint(buf, uint64(len(recs)))
		for k, v := range recs {
			buf = appendString(buf, string(k))
			buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(v))
		}
	}
	return buf, nil
}

func (enc requestEncoding) Unmarshal(b []byte) (context.Context, xexporterhelper.Request, error) {
	if len(b) < len(encodingMagic) || string(b[:len(encodingMagic)]) != encodingMagic {
		return nil, nil, errors.New("cloudzero: persisted request has an unknown format")
	}
	d := decoder{b: b[len(encodingMagic):]}
	set := record.NewSet()
	for len(d.b) > 0 && d.err == nil {
		stream := d.string()
		n := d.uvarint()
		for i := uint64(0); i < n && d.err == nil; i++ {
			k := record.Key(d.string())
			v := d.float()
			if d.err == nil {
				set.Add(stream, k, v)
			}
		}
	}
	if d.err != nil {
		return nil, nil, fmt.Errorf("cloudzero: persisted request is corrupt: %w", d.err)
	}
	r := newRecordsRequest(set, enc.waiting)
	r.waiting(set.Len())
	return context.Background(), r, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

var errTruncated = errors.New("truncated")

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errTruncated
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) float() float64 {
	if d.err != nil || len(d.b) < 8 {
		d.err = errTruncated
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}
