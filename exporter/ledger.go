package exporter

import (
	"time"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// entryState is where a ledger entry is in its delivery.
type entryState uint8

const (
	stateIdle     entryState = iota
	stateInflight            // in a request whose answer has not come
	stateFailed              // its last request failed: inflight merges into the next send
)

// entry is one record key of the ledger. Values are float64, summed in the
// order they arrive; the journal replays the same operations in the same
// order, so a restored entry holds the same bits.
type entry struct {
	key record.Key
	// value: with sum, what was counted and not yet put in a request; with
	// replace, the key's total.
	value float64
	// inflight: with sum, the amount of the last request, until CloudZero
	// confirms it (a failed request's amount merges into the next one);
	// with replace, the total in flight.
	inflight float64
	// confirmed: with replace, the total CloudZero holds; with sum, what it
	// confirmed so far (for the self-metrics).
	confirmed float64
	bucketEnd int64 // unix nanoseconds
	lastSend  int64 // scheduled time of the round that last sent it
	// unsentSince is when the key last went from nothing unsent to something
	// unsent (0 when nothing is unsent).
	unsentSince int64
	stream      uint16
	state       entryState
	live        bool
	daily       bool // the bucket is a UTC day (else an hour)
}

// started reports whether e's bucket has started at now: a point stamped
// by a clock running ahead may open a bucket CloudZero would refuse as
// being in the future.
func (e *entry) started(now int64) bool {
	length := int64(time.Hour)
	if e.daily {
		length = int64(24 * time.Hour)
	}
	return e.bucketEnd-length <= now
}

// ledger holds one entry per record key: what was counted, what is in
// flight and what CloudZero confirmed. It grows with distinct keys, never
// with data points, up to maxKeys. It is not safe for concurrent use: the
// Delivery's lock guards it.
type ledger struct {
	op        Op
	maxKeys   int
	streams   []string
	streamIDs map[string]uint16
	index     []map[record.Key]uint32 // per stream: key -> entry id
	entries   []entry
	free      []uint32
	live      int
}

func newLedger(op Op, maxKeys int) *ledger {
	return &ledger{op: op, maxKeys: maxKeys, streamIDs: map[string]uint16{}}
}

func (l *ledger) streamID(name string) uint16 {
	if id, ok := l.streamIDs[name]; ok {
		return id
	}
	id := uint16(len(l.streams))
	l.streams = append(l.streams, name)
	l.streamIDs[name] = id
	l.index = append(l.index, map[record.Key]uint32{})
	return id
}

// lookup returns the entry id of (stream, key).
func (l *ledger) lookup(stream string, key record.Key) (uint32, bool) {
	sid, ok := l.streamIDs[stream]
	if !ok {
		return 0, false
	}
	id, ok := l.index[sid][key]
	return id, ok
}

// cached returns the entry id the translator keeps with o (Output.Ref),
// if it still holds o's key: a key seen again needs no map lookup. The
// comparisons are of the same strings, so they cost no more than a
// pointer check.
func (l *ledger) cached(o translator.Output) (uint32, bool) {
	r := *o.Ref
	if r == 0 || r > uint64(len(l.entries)) {
		return 0, false
	}
	e := &l.entries[r-1]
	return uint32(r - 1), e.live && e.key == o.Key && l.streams[e.stream] == o.Stream
}

// bind creates the entry for (stream, key) under id, or under a new id when
// id is noID. A previous holder of the id, or a previous entry of the key,
// is replaced: the journal binds a key only after the live ledger forgot it,
// which it does only when nothing was left to send.
func (l *ledger) bind(id uint32, stream string, key record.Key) (uint32, error) {
	start, g, err := key.Bucket()
	if err != nil {
		return 0, err
	}
	sid := l.streamID(stream)
	if old, ok := l.index[sid][key]; ok {
		l.forget(old)
	}
	if id == noID {
		if n := len(l.free); n > 0 {
			id, l.free = l.free[n-1], l.free[:n-1]
		} else {
			id = uint32(len(l.entries))
		}
	}
	for int(id) >= len(l.entries) {
		l.entries = append(l.entries, entry{})
	}
	if l.entries[id].live {
		l.forget(id)
	}
	l.entries[id] = entry{key: key, stream: sid, bucketEnd: start.Add(g.Duration()).UnixNano(), live: true, daily: g == record.Daily}
	l.index[sid][key] = id
	l.live++
	return id, nil
}

const noID = ^uint32(0)

// forget removes entry id; its id is reused by a later bind.
func (l *ledger) forget(id uint32) {
	e := &l.entries[id]
	if !e.live {
		return
	}
	delete(l.index[e.stream], e.key)
	*e = entry{}
	l.free = append(l.free, id)
	l.live--
}

// rebuildFree recomputes the free list after a restore.
func (l *ledger) rebuildFree() {
	l.free = l.free[:0]
	for id := len(l.entries) - 1; id >= 0; id-- {
		if !l.entries[id].live {
			l.free = append(l.free, uint32(id))
		}
	}
}

// add counts v into entry id at time now.
func (l *ledger) add(id uint32, v float64, now int64) {
	e := &l.entries[id]
	e.value += v
	if e.unsentSince == 0 && l.unsent(e) {
		e.unsentSince = now
	}
}

// unsent reports whether e holds something CloudZero has not confirmed.
func (l *ledger) unsent(e *entry) bool {
	if l.op == OpReplace {
		return e.value != e.confirmed
	}
	return e.value != 0 || (e.state != stateIdle && e.inflight != 0)
}

// sendable reports whether e has something to send now: unsent, not in
// flight, and a value CloudZero accepts (> 0).
func (l *ledger) sendable(e *entry) bool {
	return e.live && e.state != stateInflight && l.unsent(e) && l.sendValue(e) > 0
}

// sendValue is what a request for e would carry now.
func (l *ledger) sendValue(e *entry) float64 {
	if l.op == OpReplace {
		return e.value
	}
	if e.state != stateIdle {
		// Failed, or (only in a replay) in flight with no answer recorded
		// because writing it failed: send it again rather than lose it.
		return e.inflight + e.value
	}
	return e.value
}

// begin puts entry id in a request made by the round scheduled at tau and
// returns the value the request carries.
func (l *ledger) begin(id uint32, tau int64) float64 {
	e := &l.entries[id]
	if l.op == OpReplace {
		e.inflight = e.value
	} else {
		e.inflight = l.sendValue(e)
		e.value = 0
	}
	e.state = stateInflight
	e.lastSend = tau
	return e.inflight
}

// confirm settles entry id's request as applied (or refused for good: its
// units are then dropped, and counted by the caller).
func (l *ledger) confirm(id uint32) {
	e := &l.entries[id]
	if e.state != stateInflight {
		return
	}
	if l.op == OpReplace {
		e.confirmed = e.inflight
	} else {
		e.confirmed += e.inflight
	}
	e.inflight, e.state = 0, stateIdle
	if !l.unsent(e) {
		e.unsentSince = 0
	}
}

// fail settles entry id's request as failed: what it carried goes out with
// the key's next request.
func (l *ledger) fail(id uint32) {
	if e := &l.entries[id]; e.state == stateInflight {
		e.state = stateFailed
	}
}

// convert switches the ledger to op, keeping what each key means: with
// sum, value is what was not sent yet and confirmed what CloudZero holds;
// with replace, value is the key's total. A request whose answer was not
// received counts, in replace, as not applied (the total goes again:
// harmless), and in sum as applied being unknown (the ambiguous case).
func (l *ledger) convert(op Op) {
	if op == l.op {
		return
	}
	for i := range l.entries {
		e := &l.entries[i]
		if !e.live {
			continue
		}
		if op == OpReplace {
			e.value = l.sendValue(e) + e.confirmed
		} else {
			e.value -= e.confirmed
		}
		e.inflight, e.state = 0, stateIdle
		if !e.unsentAs(op) {
			e.unsentSince = 0
		}
	}
	l.op = op
}

// unsentAs is unsent for an idle entry under op.
func (e *entry) unsentAs(op Op) bool {
	if op == OpReplace {
		return e.value != e.confirmed
	}
	return e.value != 0
}

// discardable reports whether e holds usage that can never be sent: its
// bucket has closed, nothing of it is in flight, and what it would send is
// not > 0 (negative contributions that did not net out with the rest of
// the bucket; CloudZero takes only values > 0).
func (l *ledger) discardable(e *entry, now, settle int64) bool {
	return e.live && e.state != stateInflight && l.unsent(e) && l.sendValue(e) <= 0 && e.bucketEnd+settle <= now
}

// discard settles entry id without sending, and returns the (non-positive)
// value dropped. With replace, CloudZero keeps the last total it was sent.
func (l *ledger) discard(id uint32) float64 {
	e := &l.entries[id]
	v := l.sendValue(e)
	if l.op == OpReplace {
		e.confirmed = e.value
	} else {
		e.value, e.inflight = 0, 0
	}
	e.state, e.unsentSince = stateIdle, 0
	return v
}

// prune forgets the entries that can no longer change what CloudZero
// holds. With sum, a key of a closed bucket with nothing unsent: a late
// point simply starts a new entry, whose value adds up. With replace, a
// sent key is kept for retention after its bucket closed, since a late
// point must be added to the full total; points older than that are
// dropped by the translator (too_old).
func (l *ledger) prune(now, settle, retention int64) int {
	pruned := 0
	for id := range l.entries {
		e := &l.entries[id]
		if !e.live || e.state != stateIdle || l.unsent(e) {
			continue
		}
		keep := settle
		if l.op == OpReplace {
			keep = retention
		}
		if e.bucketEnd+keep <= now {
			l.forget(uint32(id))
			pruned++
		}
	}
	return pruned
}

// LedgerStats describes the ledger at one instant.
type LedgerStats struct {
	OpenKeys, ClosedKeys int     // keys whose bucket is still open / has closed
	UnsentKeys           int     // keys holding something CloudZero has not confirmed
	UnsentUnits          float64 // sum: the unconfirmed units; replace: the totals not yet confirmed
	OldestUnsentAge      float64 // seconds the longest-waiting unsent key has waited
}

func (l *ledger) stats(now int64) LedgerStats {
	var s LedgerStats
	oldest := int64(0)
	for i := range l.entries {
		e := &l.entries[i]
		if !e.live {
			continue
		}
		if e.bucketEnd > now {
			s.OpenKeys++
		} else {
			s.ClosedKeys++
		}
		if !l.unsent(e) {
			continue
		}
		s.UnsentKeys++
		s.UnsentUnits += max(l.sendValue(e), 0)
		if e.unsentSince > 0 && (oldest == 0 || e.unsentSince < oldest) {
			oldest = e.unsentSince
		}
	}
	if oldest > 0 && now > oldest {
		s.OldestUnsentAge = float64(now-oldest) / 1e9
	}
	return s
}
