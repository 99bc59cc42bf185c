package translator

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// seriesID is a 128-bit hash of a series' identity. It is built only from the
// data (no per-process seed), so persisted state stays valid across restarts.
type seriesID struct{ hi, lo uint64 }

// series is the fixed-size state of one series: its last accepted point.
type series struct {
	ts    int64   // timestamp, unix nanoseconds
	seen  int64   // clock when last seen, unix nanoseconds
	v     float64 // value, level or count
	iv    int64   // v exactly, when isInt
	sum   float64 // distribution sum
	noSum bool
	isInt bool
}

func newSeries(p *point, now int64) series {
	return series{ts: p.ts, seen: now, v: p.v, iv: p.iv, isInt: p.isInt, sum: p.sum, noSum: !p.hasSum}
}

const hashSeed2 = 0x9e3779b97f4a7c15

type kv struct {
	k string
	v pcommon.Value
}

// hasher builds the canonical identity bytes of a series in a reused buffer.
type hasher struct {
	buf    []byte
	prefix int // bytes of resource, scope and metric identity in buf
	d      *xxhash.Digest
	kvs    []kv
}

func (h *hasher) init() { h.d = xxhash.NewWithSeed(hashSeed2) }

func (h *hasher) sum(b []byte) seriesID {
	h.d.ResetWithSeed(hashSeed2)
	_, _ = h.d.Write(b)
	return seriesID{hi: h.d.Sum64(), lo: xxhash.Sum64(b)}
}

func appendID(b []byte, id seriesID) []byte {
	return binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(b, id.hi), id.lo)
}

// hashPrefix prepares the identity shared by every point of metric m.
func (c *callCtx) hashPrefix(m pmetric.Metric) {
	h := &c.t.hasher
	if !c.resHashed {
		h.buf = appendMap(h.buf[:0], c.res, &h.kvs)
		c.resHash, c.resHashed = h.sum(h.buf), true
	}
	if !c.scopeHashed {
		h.buf = appendStr(h.buf[:0], c.scope.Name())
		h.buf = appendStr(h.buf, c.scope.Version())
		h.buf = appendMap(h.buf, c.scope.Attributes(), &h.kvs)
		c.scopeHash, c.scopeHashed = h.sum(h.buf), true
	}
	b := appendID(appendID(h.buf[:0], c.resHash), c.scopeHash)
	b = appendStr(b, m.Name())
	b = appendStr(b, m.Unit())
	var temporality pmetric.AggregationTemporality
	monotonic := false
	switch m.Type() {
	case pmetric.MetricTypeSum:
		temporality, monotonic = m.Sum().AggregationTemporality(), m.Sum().IsMonotonic()
	case pmetric.MetricTypeHistogram:
		temporality = m.Histogram().AggregationTemporality()
	case pmetric.MetricTypeExponentialHistogram:
		temporality = m.ExponentialHistogram().AggregationTemporality()
	}
	b = append(b, byte(m.Type()), byte(temporality))
	if monotonic {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	h.buf, h.prefix = b, len(b)
	// A gauge's start time is optional and means nothing (some SDKs set a
	// new one on every export): it is not part of a gauge series' identity.
	c.startInID = m.Type() != pmetric.MetricTypeGauge
}

func (c *callCtx) seriesID(p *point) seriesID {
	h := &c.t.hasher
	b := appendMap(h.buf[:h.prefix], p.attrs, &h.kvs)
	if c.startInID {
		b = binary.LittleEndian.AppendUint64(b, uint64(p.start))
	}
	h.buf = b
	return h.sum(b)
}

func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// appendMap encodes m canonically: keys sorted, each value tagged by type.
func appendMap(b []byte, m pcommon.Map, scratch *[]kv) []byte {
	kvs := (*scratch)[:0]
	for k, v := range m.All() {
		kvs = append(kvs, kv{k, v})
	}
	slices.SortFunc(kvs, func(a, b kv) int { return strings.Compare(a.k, b.k) })
	*scratch = kvs
	b = binary.AppendUvarint(b, uint64(len(kvs)))
	for _, e := range kvs {
		b = appendValue(appendStr(b, e.k), e.v)
	}
	return b
}

func appendValue(b []byte, v pcommon.Value) []byte {
	b = append(b, byte(v.Type()))
	switch v.Type() {
	case pcommon.ValueTypeStr:
		b = appendStr(b, v.Str())
	case pcommon.ValueTypeInt:
		b = binary.LittleEndian.AppendUint64(b, uint64(v.Int()))
	case pcommon.ValueTypeDouble:
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v.Double()))
	case pcommon.ValueTypeBool:
		if v.Bool() {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	case pcommon.ValueTypeBytes:
		b = appendStr(b, string(v.Bytes().AsRaw()))
	case pcommon.ValueTypeSlice:
		sl := v.Slice()
		b = binary.AppendUvarint(b, uint64(sl.Len()))
		for i := 0; i < sl.Len(); i++ {
			b = appendValue(b, sl.At(i))
		}
	case pcommon.ValueTypeMap:
		var nested []kv // rare: not worth a scratch per depth
		b = appendMap(b, v.Map(), &nested)
	}
	return b
}

// sweep forgets series not seen for the TTL, as part of tx: the deletions
// are in its Changes (tombstones), so that a journal of the changes replays
// them, and Rollback undoes them.
func (t *Translator) sweep(now int64, tx *Tx) {
	for id, s := range t.series {
		if now-s.seen > t.ttl {
			tx.undo = append(tx.undo, undoEntry{id: id, prev: *s, existed: true})
			delete(t.series, id)
			t.forgot(now)
		}
	}
	t.lastSweep = now
}

const (
	stateMagic   = "CZTS\x01" // format version 1
	stateRecSize = 16 + 8*4 + 1
)

// MarshalState encodes the per-series state, for RestoreState after a restart.
func (t *Translator) MarshalState() ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ids := make([]seriesID, 0, len(t.series))
	for id := range t.series {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b seriesID) int {
		if a.hi != b.hi {
			return cmpU64(a.hi, b.hi)
		}
		return cmpU64(a.lo, b.lo)
	})
	b := make([]byte, 0, len(stateMagic)+binary.MaxVarintLen64+len(ids)*stateRecSize)
	b = append(b, stateMagic...)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = appendSeries(b, id, t.series[id], 0)
	}
	return b, nil
}

func cmpU64(a, b uint64) int {
	if a < b {
		return -1
	}
	return 1
}

// ErrBadState is returned by RestoreState for data MarshalState did not produce.
var ErrBadState = errors.New("translator: invalid or unsupported state encoding")

// RestoreState adds the series encoded by MarshalState (or by Tx.Changes,
// whose tombstones delete series) to the state (up to MaxSeries). A
// restored series continues: its next point is a delta from the restored
// value. Series past their TTL now are left out.
func (t *Translator) RestoreState(b []byte) error { return t.RestoreStateAt(b, t.now()) }

// RestoreStateAt is RestoreState judging the TTL at asOf: the time the
// state was written, when the process that wrote it stopped long ago (see
// ShiftSeen).
func (t *Translator) RestoreStateAt(b []byte, asOf time.Time) error {
	rest, ok := strings.CutPrefix(string(b), stateMagic)
	if !ok {
		return ErrBadState
	}
	n, k := binary.Uvarint([]byte(rest))
	if k <= 0 || n > uint64(len(rest)) || uint64(len(rest)-k) != n*stateRecSize {
		return ErrBadState
	}
	data := []byte(rest[k:])
	t.mu.Lock()
	defer t.mu.Unlock()
	now := asOf.UnixNano()
	for ; len(data) > 0; data = data[stateRecSize:] {
		u := func(i int) uint64 { return binary.LittleEndian.Uint64(data[i*8:]) }
		id := seriesID{hi: u(0), lo: u(1)}
		flags := data[48]
		if flags&flagDeleted != 0 || now-int64(u(3)) > t.ttl {
			// Deleted, or past its TTL: restoring it could take the place
			// of a live series when the state is at MaxSeries.
			delete(t.series, id)
			continue
		}
		if _, present := t.series[id]; !present && len(t.series) >= t.maxSeries {
			continue
		}
		sr := &series{ts: int64(u(2)), seen: int64(u(3)), v: math.Float64frombits(u(4)),
			sum: math.Float64frombits(u(5)), noSum: flags&flagNoSum != 0, isInt: flags&flagInt != 0}
		if sr.isInt {
			sr.iv = int64(u(4))
			sr.v = float64(sr.iv)
		}
		t.series[id] = sr
	}
	t.lastSweep = math.MinInt64 / 2 // sweep expired series at the next call
	// An earlier run may have forgotten series (swept, refused at
	// MaxSeries) whose usage it counted: no series started before now
	// counts in full by the second bound of countsFromStart.
	t.forgot(max(now, t.now().UnixNano()))
	return nil
}

// StartTime is Settings.StartTime: the first cumulative point of a series
// started later counts in full.
func (t *Translator) StartTime() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return time.Unix(0, t.start)
}

// SetStartTime replaces Settings.StartTime, for a caller that restores the
// time the exporter first started from storage: a series that started
// while the exporter was down then counts in full at its first point.
func (t *Translator) SetStartTime(start time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.start = start.UnixNano()
	t.forgot(t.now().UnixNano()) // the earlier runs' forgets are unknown: see RestoreStateAt
}

// ShiftSeen moves the time every series was last seen d later. After a
// restart, shifting by the time the process was down keeps a series' TTL
// counting time the exporter ran, not time it was stopped: a collector
// down for longer than the TTL does not forget its cumulative series (and
// lose their usage during the outage to a new baseline).
func (t *Translator) ShiftSeen(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.series {
		s.seen += int64(d)
	}
}
