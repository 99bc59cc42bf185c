package exporter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	"go.opentelemetry.io/collector/extension/xextension/storage"
)

// journal persists the ledger and the translator's series state through a
// storage extension client, as a write-ahead log and snapshots:
//
//	head             which snapshot is current and where its log starts
//	snap/<g>/t       snapshot g: the translator's state
//	snap/<g>/<i>     snapshot g: ledger entries, in chunks
//	wal/<n>          log record n: one Consume, or a request begun, confirmed or failed
//
// Every change is one Set of one key, so the storage needs no transactions:
// a snapshot is written first, then made current by the single Set of head.
// The storage API has no listing, hence the numbering.
type journal struct {
	client storage.Client
	h      journalHead
	next   uint64 // number of the next log record
	// logBytes is what the log holds since the current snapshot; compaction
	// writes a new snapshot once it outgrows the snapshot (amortised O(1)).
	logBytes int64
}

type journalHead struct {
	gen       uint64 // current snapshot (0 = none)
	chunks    uint64 // its ledger chunks
	start     uint64 // first log record after it
	clean     uint64 // log records below this are deleted
	snapBytes int64
	// oldGen, oldChunks: the snapshot replaced by gen, until it is deleted.
	oldGen, oldChunks uint64
}

const (
	headKey     = "head"
	headMagic   = "CZL2"  // format 2: snapshots carry their time, the first start and the mode
	chunkBytes  = 4 << 20 // bytes per snapshot chunk
	deleteBatch = 1000    // keys deleted per storage batch
)

// compactMinBytes is the log size below which compaction is not worth it.
var compactMinBytes int64 = 16 << 20

func walKey(n uint64) string { return "wal/" + strconv.FormatUint(n, 10) }

func snapKey(gen uint64, part string) string {
	return "snap/" + strconv.FormatUint(gen, 10) + "/" + part
}

// errCorrupt marks stored data this version cannot read.
var errCorrupt = errors.New("cloudzero: stored ledger is corrupt or from an incompatible version")

// open reads the head; snapshot and log are read by restore.
func (j *journal) open(ctx context.Context) error {
	b, err := j.client.Get(ctx, headKey)
	if err != nil {
		return err
	}
	if b == nil {
		return nil
	}
	d := decoder{b: b}
	if string(d.bytes(len(headMagic))) != headMagic {
		return errCorrupt
	}
	j.h = journalHead{gen: d.uvarint(), chunks: d.uvarint(), start: d.uvarint(), clean: d.uvarint(),
		snapBytes: int64(d.uvarint()), oldGen: d.uvarint(), oldChunks: d.uvarint()}
	if d.err != nil {
		return errCorrupt
	}
	return nil
}

// restore hands the current snapshot (translator state, then each ledger
// chunk) and then every log record after it to the callbacks, in order.
func (j *journal) restore(ctx context.Context, translatorState func([]byte) error, chunk, record func([]byte) error) (records int, err error) {
	if j.h.gen > 0 {
		b, err := j.client.Get(ctx, snapKey(j.h.gen, "t"))
		if err != nil {
			return 0, err
		}
		if b == nil {
			return 0, fmt.Errorf("%w: the snapshot's series state is missing", errCorrupt)
		}
		if err := translatorState(b); err != nil {
			return 0, err
		}
		for i := range j.h.chunks {
			b, err := j.client.Get(ctx, snapKey(j.h.gen, strconv.FormatUint(i, 10)))
			if err != nil {
				return 0, err
			}
			if b == nil {
				return 0, fmt.Errorf("%w: snapshot chunk %d missing", errCorrupt, i)
			}
			if err := chunk(b); err != nil {
				return 0, err
			}
		}
	}
	j.next = j.h.start
	for {
		b, err := j.client.Get(ctx, walKey(j.next))
		if err != nil {
			return records, err
		}
		if b == nil {
			return records, j.dropOld(ctx)
		}
		if err := record(b); err != nil {
			return records, fmt.Errorf("log record %d: %w", j.next, err)
		}
		j.logBytes += int64(len(b))
		j.next++
		records++
	}
}

// append writes the next log record.
func (j *journal) append(ctx context.Context, rec []byte) error {
	if err := j.client.Set(ctx, walKey(j.next), rec); err != nil {
		return err
	}
	j.next++
	j.logBytes += int64(len(rec))
	return nil
}

func (j *journal) wantsCompaction() bool {
	return j.logBytes >= max(compactMinBytes, j.h.snapBytes)
}

// A compaction runs in three steps, so that appends (under the Delivery's
// lock) go on while the snapshot is written: writeSnapshot (no lock: it
// touches only the storage), makeCurrent (under the lock), dropOld (no lock).
// j.h is only touched by the goroutine that compacts; j.next and j.logBytes
// only under the lock.

// writeSnapshot stores snapshot gen: the translator's state and the ledger
// chunks. It is not current until makeCurrent.
func (j *journal) writeSnapshot(ctx context.Context, gen uint64, translatorState []byte, chunks [][]byte) (int64, error) {
	size := int64(len(translatorState))
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := j.client.Set(ctx, snapKey(gen, "t"), translatorState); err != nil {
		return 0, err
	}
	for i, c := range chunks {
		if err := ctx.Err(); err != nil {
			return 0, err // shutting down: the old snapshot stays current
		}
		if err := j.client.Set(ctx, snapKey(gen, strconv.Itoa(i)), c); err != nil {
			return 0, err
		}
		size += int64(len(c))
	}
	return size, nil
}

// makeCurrent makes snapshot gen current: it holds the state after every
// log record before cut, when the log held logBytesAtCut bytes. It returns
// dropOld.
func (j *journal) makeCurrent(ctx context.Context, gen, chunks, cut uint64, size, logBytesAtCut int64) error {
	old := j.h
	j.h = journalHead{gen: gen, chunks: chunks, start: cut, clean: old.clean, snapBytes: size, oldGen: old.gen, oldChunks: old.chunks}
	if err := j.writeHead(ctx); err != nil {
		j.h = old
		return err
	}
	j.logBytes -= logBytesAtCut
	return nil
}

// dropOld deletes the replaced snapshot and the log before the current one.
// A crash midway leaves garbage that the next dropOld deletes: the head says
// what is left (oldGen, clean).
func (j *journal) dropOld(ctx context.Context) error {
	if j.h.oldGen > 0 {
		ops := []*storage.Operation{storage.DeleteOperation(snapKey(j.h.oldGen, "t"))}
		for i := range j.h.oldChunks {
			ops = append(ops, storage.DeleteOperation(snapKey(j.h.oldGen, strconv.FormatUint(i, 10))))
		}
		if err := j.client.Batch(ctx, ops...); err != nil {
			return err
		}
		j.h.oldGen, j.h.oldChunks = 0, 0
		if err := j.writeHead(ctx); err != nil {
			return err
		}
	}
	return j.cleanup(ctx)
}

// cleanup deletes the log records before the current snapshot.
func (j *journal) cleanup(ctx context.Context) error {
	for j.h.clean < j.h.start {
		end := min(j.h.start, j.h.clean+deleteBatch)
		ops := make([]*storage.Operation, 0, end-j.h.clean)
		for n := j.h.clean; n < end; n++ {
			ops = append(ops, storage.DeleteOperation(walKey(n)))
		}
		if err := j.client.Batch(ctx, ops...); err != nil {
			return err
		}
		j.h.clean = end
		if err := j.writeHead(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (j *journal) writeHead(ctx context.Context) error {
	b := []byte(headMagic)
	for _, v := range []uint64{j.h.gen, j.h.chunks, j.h.start, j.h.clean, uint64(j.h.snapBytes), j.h.oldGen, j.h.oldChunks} {
		b = binary.AppendUvarint(b, v)
	}
	return j.client.Set(ctx, headKey, b)
}

// Encoding helpers: little-endian fixed-size numbers, uvarints, and
// uvarint-length-prefixed strings.

func appendU64(b []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(b, v) }

func appendF64(b []byte, v float64) []byte { return appendU64(b, math.Float64bits(v)) }

func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decoder reads what the append helpers wrote; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err, d.b = errCorrupt, nil }

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) u64() uint64 {
	b := d.bytes(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

func (d *decoder) byte1() byte {
	if b := d.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) f64() float64 { return math.Float64frombits(d.u64()) }

func (d *decoder) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	return string(d.bytes(int(n)))
}

func (d *decoder) done() bool { return d.err == nil && len(d.b) == 0 }
