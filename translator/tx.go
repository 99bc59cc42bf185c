package translator

import (
	"encoding/binary"
	"math"

	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// Tx is one translation whose changes to the series state are not final:
// the caller commits them once the records are safely queued, or rolls them
// back when they were refused, so that the same usage is counted again at
// the next point (cumulative) or when the sender retries (delta). The
// Translator stays locked from Begin until Commit or Rollback.
type Tx struct {
	t     *Translator
	out   []Output // valid until Commit or Rollback
	set   *record.Set
	stats Stats
	undo  []undoEntry
	done  bool
}

// undoEntry is the state of a series before one change; replaying them in
// reverse order restores the state before the call.
type undoEntry struct {
	id      seriesID
	prev    series
	existed bool
}

// Begin translates md. Records and Stats are ready at once; the series state
// changes take effect for later calls only after Commit.
func (t *Translator) Begin(md pmetric.Metrics) *Tx {
	t.mu.Lock()
	tx := &Tx{t: t, undo: t.undoBuf[:0]}
	t.translate(md, tx)
	return tx
}

// Records returns the records of the translation.
func (tx *Tx) Records() *record.Set {
	if tx.set == nil {
		tx.set = record.NewSet()
		for _, o := range tx.out {
			tx.set.Add(o.Stream, o.Key, o.Value)
		}
	}
	return tx.set
}

// Outputs returns the records of the translation, each (stream, key) once,
// without building a Set; the slice is reused after Commit or Rollback.
func (tx *Tx) Outputs() []Output { return tx.out }

// Changes encodes the series this translation changed, in the RestoreState
// format (deleted series as tombstones), or returns nil when none changed: a
// caller persists them, with what it made of the records, before Commit.
func (tx *Tx) Changes() []byte {
	if len(tx.undo) == 0 {
		return nil
	}
	return tx.t.encodeChanges(tx.undo)
}

// Commit keeps the series state changes, releases the Translator and
// returns the call's stats.
func (tx *Tx) Commit() Stats {
	tx.finish()
	t := tx.t
	defer t.mu.Unlock()
	t.undoBuf = tx.undo[:0]
	return tx.stats
}

func (tx *Tx) finish() {
	if tx.done {
		panic("translator: Tx committed or rolled back twice")
	}
	tx.done = true
}

// Rollback undoes the series state changes and releases the Translator.
func (tx *Tx) Rollback() {
	tx.finish()
	t := tx.t
	defer t.mu.Unlock()
	for i := len(tx.undo) - 1; i >= 0; i-- {
		u := tx.undo[i]
		if !u.existed {
			delete(t.series, u.id)
			continue
		}
		if s := t.series[u.id]; s != nil {
			*s = u.prev
		} else {
			prev := u.prev
			t.series[u.id] = &prev
		}
	}
	t.undoBuf = tx.undo[:0]
}

// remember records s (nil when absent) as the state of id before a change.
func (c *callCtx) remember(id seriesID, s *series) {
	u := undoEntry{id: id, existed: s != nil}
	if s != nil {
		u.prev = *s
	}
	c.tx.undo = append(c.tx.undo, u)
}

// encodeChanges encodes the current state of every series in undo, in the
// RestoreState format; a series that no longer exists is a tombstone.
func (t *Translator) encodeChanges(undo []undoEntry) []byte {
	seen := make(map[seriesID]struct{}, len(undo))
	b := make([]byte, 0, len(stateMagic)+binary.MaxVarintLen64+len(undo)*stateRecSize)
	b = append(b, stateMagic...)
	countAt := len(b)
	b = binary.AppendUvarint(b, 0) // placeholder, rewritten below
	n := 0
	for _, u := range undo {
		if _, dup := seen[u.id]; dup {
			continue
		}
		seen[u.id] = struct{}{}
		n++
		if s := t.series[u.id]; s != nil {
			b = appendSeries(b, u.id, s, 0)
		} else {
			b = appendSeries(b, u.id, &series{}, flagDeleted)
		}
	}
	count := binary.AppendUvarint(nil, uint64(n))
	return append(append(b[:countAt:countAt], count...), b[countAt+1:]...)
}

// Flags in the last byte of an encoded series.
const (
	flagNoSum   = 1
	flagDeleted = 2
	flagInt     = 4 // the value field holds the exact int64, not float64 bits
)

func appendSeries(b []byte, id seriesID, s *series, flags byte) []byte {
	b = appendID(b, id)
	v := math.Float64bits(s.v)
	if s.isInt {
		v, flags = uint64(s.iv), flags|flagInt
	}
	for _, u := range []uint64{uint64(s.ts), uint64(s.seen), v, math.Float64bits(s.sum)} {
		b = binary.LittleEndian.AppendUint64(b, u)
	}
	if s.noSum {
		flags |= flagNoSum
	}
	return append(b, flags)
}
