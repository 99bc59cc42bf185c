package exporter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// What the Delivery writes to the journal. A log record is one of:
//
//	consume  time, translator changes, new keys (id, stream, key), increments (id, value)
//	begin    round time, ids: these entries went into a request
//	confirm  ids: their request was applied (or refused for good)
//	fail     ids: their request failed; what it carried goes with the next
//	discard  ids: their closed bucket's net usage was not > 0: dropped unsent
//	start    the time the exporter first started on this storage, and the delivery mode
//	mode     the delivery mode changed: the ledger is converted at this point
//
// Replaying them runs the same ledger operations in the same order as they
// ran live, so the restored floats are bit for bit the live ones. A begin
// without its confirm or fail is a request the process did not see
// answered: with sum it may have been applied (counted as ambiguous).
const (
	recConsume byte = 1 + iota
	recBegin
	recConfirm
	recFail
	recDiscard
	recStart
	recMode
)

// Delivery modes as stored.
var storedOps = []Op{OpSum, OpReplace}

func storedOp(b byte) (Op, error) {
	if int(b) >= len(storedOps) {
		return "", fmt.Errorf("%w: delivery mode %d", errCorrupt, b)
	}
	return storedOps[b], nil
}

func opByte(op Op) byte { return byte(slices.Index(storedOps, op)) }

// encodeConsume encodes the consume record of the call in d.scratch.
func (d *Delivery) encodeConsume(b []byte, now int64, changes []byte) []byte {
	s, l := &d.scratch, d.ledger
	b = append(b, recConsume)
	b = appendU64(b, uint64(now))
	b = binary.AppendUvarint(b, uint64(len(changes)))
	b = append(b, changes...)
	b = binary.AppendUvarint(b, uint64(len(s.binds)))
	for _, id := range s.binds {
		e := &l.entries[id]
		b = binary.AppendUvarint(b, uint64(id))
		b = appendStr(b, l.streams[e.stream])
		b = appendStr(b, string(e.key))
	}
	b = binary.AppendUvarint(b, uint64(len(s.adds)))
	for _, a := range s.adds {
		b = binary.AppendUvarint(b, uint64(a.id))
		b = appendF64(b, a.value)
	}
	return b
}

// applyRecord replays one log record.
func (d *Delivery) applyRecord(b []byte) error {
	if len(b) == 0 {
		return errCorrupt
	}
	dec := decoder{b: b[1:]}
	l := d.ledger
	switch b[0] {
	case recConsume:
		now := int64(dec.u64())
		d.lastAlive = max(d.lastAlive, now)
		if changes := dec.bytes(int(dec.uvarint())); len(changes) > 0 && dec.err == nil {
			if err := d.tr.RestoreStateAt(changes, time.Unix(0, now)); err != nil {
				return err
			}
		}
		for n := dec.uvarint(); n > 0 && dec.err == nil; n-- {
			id, stream, key := uint32(dec.uvarint()), dec.str(), record.Key(dec.str())
			if dec.err == nil {
				if _, err := l.bind(id, stream, key); err != nil {
					return fmt.Errorf("%w: %w", errCorrupt, err)
				}
			}
		}
		for n := dec.uvarint(); n > 0 && dec.err == nil; n-- {
			id, v := dec.uvarint(), dec.f64()
			if dec.err == nil {
				if !l.isLive(id) {
					return fmt.Errorf("%w: increment of unknown entry %d", errCorrupt, id)
				}
				l.add(uint32(id), v, now)
			}
		}
	case recBegin:
		tau := int64(dec.u64())
		d.lastAlive = max(d.lastAlive, tau)
		err := d.applyIDs(&dec, func(id uint32) { l.begin(id, tau) })
		if err != nil {
			return err
		}
	case recConfirm:
		if err := d.applyIDs(&dec, l.confirm); err != nil {
			return err
		}
	case recFail:
		if err := d.applyIDs(&dec, l.fail); err != nil {
			return err
		}
	case recStart:
		d.tr.SetStartTime(time.Unix(0, int64(dec.u64())))
		op, err := storedOp(dec.byte1())
		if err != nil {
			return err
		}
		l.op = op
	case recMode:
		op, err := storedOp(dec.byte1())
		if err != nil {
			return err
		}
		l.convert(op)
	case recDiscard:
		if err := d.applyIDs(&dec, func(id uint32) { l.discard(id) }); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: record type %d", errCorrupt, b[0])
	}
	if !dec.done() {
		return errCorrupt
	}
	return nil
}

func (d *Delivery) applyIDs(dec *decoder, f func(uint32)) error {
	for n := dec.uvarint(); n > 0 && dec.err == nil; n-- {
		id := dec.uvarint()
		if dec.err != nil {
			break
		}
		if !d.ledger.isLive(id) {
			return fmt.Errorf("%w: unknown entry %d", errCorrupt, id)
		}
		f(uint32(id))
	}
	return dec.err
}

func (l *ledger) isLive(id uint64) bool {
	return id < uint64(len(l.entries)) && l.entries[id].live
}

// snapshot is the whole state at one point of the log, encoded.
type snapshot struct {
	gen           uint64
	translator    []byte
	chunks        [][]byte
	cut           uint64 // the first log record after it
	logBytesAtCut int64
}

// snapshotLocked encodes the translator's state (after the time it was
// taken) and every ledger entry; d.mu must be held.
func (d *Delivery) snapshotLocked() (snapshot, error) {
	t, err := d.tr.MarshalState()
	if err != nil {
		return snapshot{}, err
	}
	head := appendU64(appendU64(nil, uint64(d.now().UnixNano())), uint64(d.tr.StartTime().UnixNano()))
	t = append(append(head, opByte(d.ledger.op)), t...)
	s := snapshot{gen: d.journal.h.gen + 1, translator: t, cut: d.journal.next, logBytesAtCut: d.journal.logBytes}
	l := d.ledger
	var chunk []byte // entries of the chunk being built
	n := 0
	flush := func() {
		if n > 0 {
			s.chunks = append(s.chunks, append(binary.AppendUvarint(nil, uint64(n)), chunk...))
		}
		chunk, n = chunk[:0], 0
	}
	for id := range l.entries {
		e := &l.entries[id]
		if !e.live {
			continue
		}
		chunk = binary.AppendUvarint(chunk, uint64(id))
		chunk = appendStr(chunk, l.streams[e.stream])
		chunk = appendStr(chunk, string(e.key))
		for _, v := range []float64{e.value, e.inflight, e.confirmed} {
			chunk = appendF64(chunk, v)
		}
		chunk = appendU64(chunk, uint64(e.lastSend))
		chunk = appendU64(chunk, uint64(e.unsentSince))
		chunk = append(chunk, byte(e.state))
		n++
		if len(chunk) >= chunkBytes {
			flush()
		}
	}
	flush()
	return s, nil
}

// applyTranslatorSnapshot restores the series state of a snapshot: its
// time, the exporter's first start, then the state as of that time.
func (d *Delivery) applyTranslatorSnapshot(b []byte) error {
	dec := decoder{b: b}
	at, start, opb := int64(dec.u64()), int64(dec.u64()), dec.byte1()
	if dec.err != nil {
		return dec.err
	}
	op, err := storedOp(opb)
	if err != nil {
		return err
	}
	d.ledger.op = op // the entries that follow are in this mode
	d.lastAlive = max(d.lastAlive, at)
	d.tr.SetStartTime(time.Unix(0, start))
	return d.tr.RestoreStateAt(dec.b, time.Unix(0, at))
}

// applyChunk restores the entries of one snapshot chunk.
func (d *Delivery) applyChunk(b []byte) error {
	dec := decoder{b: b}
	l := d.ledger
	for n := dec.uvarint(); n > 0 && dec.err == nil; n-- {
		id, stream, key := uint32(dec.uvarint()), dec.str(), record.Key(dec.str())
		value, inflight, confirmed := dec.f64(), dec.f64(), dec.f64()
		lastSend, unsentSince := int64(dec.u64()), int64(dec.u64())
		sb := dec.bytes(1)
		if dec.err != nil {
			break
		}
		state := entryState(sb[0])
		if state > stateFailed {
			return errCorrupt
		}
		if _, err := l.bind(id, stream, key); err != nil {
			return fmt.Errorf("%w: %w", errCorrupt, err)
		}
		e := &l.entries[id]
		e.value, e.inflight, e.confirmed, e.lastSend, e.unsentSince, e.state = value, inflight, confirmed, lastSend, unsentSince, state
	}
	if !dec.done() {
		return errCorrupt
	}
	return nil
}

// restore loads the journal into the ledger and the translator (d.mu held).
func (d *Delivery) restore(ctx context.Context) error {
	j := d.journal
	records, err := 0, j.open(ctx)
	if err == nil {
		records, err = j.restore(ctx, d.applyTranslatorSnapshot, d.applyChunk, d.applyRecord)
	}
	if err == nil && j.h.gen == 0 && records == 0 {
		// A new ledger: remember when the exporter first started on it, and its mode.
		err = j.append(ctx, append(append([]byte{recStart}, appendU64(nil, uint64(d.tr.StartTime().UnixNano()))...), opByte(d.cfg.Op)))
	}
	if err != nil {
		if errors.Is(err, errCorrupt) || errors.Is(err, translator.ErrBadState) {
			return fmt.Errorf("%w; to start with an empty ledger, move the storage directory away (its unsent records are then lost)", err)
		}
		return err
	}
	l := d.ledger
	// Requests under way when the process stopped: their answer is unknown.
	// Recorded as failed, so that a later replay does not count them again.
	var interrupted []sendEntry
	units := 0.0
	for id := range l.entries {
		if e := &l.entries[id]; e.live && e.state == stateInflight {
			interrupted = append(interrupted, sendEntry{id: uint32(id)})
			units += e.inflight
			l.fail(uint32(id))
		}
	}
	if len(interrupted) > 0 {
		if err := j.append(ctx, d.idsRecord(recFail, 0, interrupted)); err != nil {
			return err
		}
	}
	if l.op != d.cfg.Op {
		d.log.Info("The stored ledger was written with another delivery mode; converting it",
			zap.String("from", string(l.op)), zap.String("to", string(d.cfg.Op)), zap.Int("keys", l.live))
		l.convert(d.cfg.Op)
		if err := j.append(ctx, []byte{recMode, opByte(d.cfg.Op)}); err != nil {
			return err
		}
	}
	// Series TTLs count the time the exporter ran, not the time it was down.
	if d.lastAlive > 0 {
		d.tr.ShiftSeen(max(0, time.Duration(d.now().UnixNano()-d.lastAlive)))
	}
	// The live ledger forgot keys the journal does not say it forgot.
	l.prune(d.now().UnixNano(), int64(settleDelay), int64(d.cfg.Translator.MaxAge))
	l.rebuildFree()
	d.restored = true
	st := l.stats(d.now().UnixNano())
	d.log.Info("Restored the CloudZero ledger from storage", zap.Int("keys", l.live), zap.Int("unsent_keys", st.UnsentKeys),
		zap.Float64("unsent_units", st.UnsentUnits), zap.Int("log_records", records))
	if n := len(interrupted); n > 0 {
		if d.cfg.Op == OpSum {
			d.log.Warn("Requests were under way when the exporter stopped; they are sent again, and count twice if CloudZero had applied them",
				zap.Int("records", n), zap.Float64("units", units))
			d.cfg.Observer.ambiguous(ctx, "", n, units)
		} else {
			d.log.Info("Requests were under way when the exporter stopped; replace sends the totals again (harmless)", zap.Int("records", n))
		}
	}
	return nil
}

// writeSnapshot stores s and makes it current. The flusher calls it without
// d.mu, taking the lock only to make the snapshot current.
func (d *Delivery) writeSnapshot(ctx context.Context, s snapshot) error {
	j := d.journal
	size, err := j.writeSnapshot(ctx, s.gen, s.translator, s.chunks)
	if err != nil {
		return err
	}
	d.mu.Lock()
	err = j.makeCurrent(ctx, s.gen, uint64(len(s.chunks)), s.cut, size, s.logBytesAtCut)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	return j.dropOld(ctx)
}

// compact writes a new snapshot when the log has outgrown the current one.
// The flusher calls it; compactMu keeps any other caller from running at
// the same time (the journal's head is only the compacting goroutine's).
func (d *Delivery) compact(ctx context.Context) {
	d.compactMu.Lock()
	defer d.compactMu.Unlock()
	d.mu.Lock()
	if d.journal == nil || !d.journal.wantsCompaction() {
		d.mu.Unlock()
		return
	}
	s, err := d.snapshotLocked()
	d.mu.Unlock()
	if err == nil {
		err = d.writeSnapshot(ctx, s)
	}
	if err != nil {
		d.log.Error("Writing a snapshot of the ledger failed; the log keeps growing until one succeeds", zap.Error(err))
	}
}
