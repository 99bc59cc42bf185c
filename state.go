package cloudzeroexporter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension/xextension/storage"
	"go.uber.org/zap"

	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// stateStorageName is the storage client name for the translator's state;
// the persistent queue already uses "metrics".
const stateStorageName = "translator_state"

// compactEvery bounds the journal: after this many entries the whole state
// is written as a new snapshot and the journal is deleted.
const compactEvery = 256

// stateStore keeps the translator's per-series state (cumulative baselines,
// last gauge points) in the same storage extension as the persistent queue,
// so that after a restart, even after SIGKILL, a cumulative series continues
// from its last value instead of starting a new baseline.
//
// Layout: "snapshot" holds the whole state and the sequence number of the
// last journal entry it includes; "journal/<n>" holds the series changed by
// one consume call. Restoring applies the snapshot, then the journal entries
// after it in order. The storage API has no listing, hence the numbering.
type stateStore struct {
	client storage.Client
	logger *zap.Logger
	seq    uint64 // last journal entry written
	snap   uint64 // last journal entry included in the snapshot
}

func openStateStore(ctx context.Context, host component.Host, id, exporterID component.ID, logger *zap.Logger) (*stateStore, error) {
	ext, ok := host.GetExtensions()[id]
	if !ok {
		return nil, fmt.Errorf("sending_queue.storage: extension %q not found", id)
	}
	se, ok := ext.(storage.Extension)
	if !ok {
		return nil, fmt.Errorf("sending_queue.storage: extension %q is not a storage extension", id)
	}
	client, err := se.GetClient(ctx, component.KindExporter, exporterID, stateStorageName)
	if err != nil {
		return nil, fmt.Errorf("sending_queue.storage: %w", err)
	}
	return &stateStore{client: client, logger: logger}, nil
}

func journalKey(n uint64) string { return "journal/" + strconv.FormatUint(n, 10) }

// restore loads the saved state into tr: the snapshot, then the journal
// entries after it.
func (s *stateStore) restore(ctx context.Context, tr *translator.Translator) error {
	snap, err := s.client.Get(ctx, "snapshot")
	if err != nil {
		return fmt.Errorf("reading translator state: %w", err)
	}
	var state []byte
	if len(snap) >= 8 {
		s.snap, state = binary.LittleEndian.Uint64(snap), snap[8:]
	}
	var journal [][]byte
	for s.seq = s.snap; ; s.seq++ {
		b, err := s.client.Get(ctx, journalKey(s.seq+1))
		if err != nil {
			return fmt.Errorf("reading translator state: %w", err)
		}
		if b == nil {
			break
		}
		journal = append(journal, b)
	}
	for _, b := range append([][]byte{state}, journal...) {
		if len(b) == 0 {
			continue
		}
		if err := tr.RestoreState(b); err != nil {
			// Written by an incompatible version: series start new baselines,
			// which loses at most one interval per series, never double counts.
			s.logger.Warn("Saved translator state is unreadable; cumulative series start new baselines", zap.Error(err))
			tr.ResetState()
			s.snap = s.seq
			return s.client.Set(ctx, "snapshot", binary.LittleEndian.AppendUint64(nil, s.seq))
		}
	}
	s.logger.Info("Restored translator state", zap.Int("journal_entries", len(journal)))
	return nil
}

// save appends the series changed by one committed call to the journal,
// compacting into a new snapshot now and then.
func (s *stateStore) save(ctx context.Context, tr *translator.Translator, changes []byte) error {
	if len(changes) == 0 {
		return nil
	}
	s.seq++
	if err := s.client.Set(ctx, journalKey(s.seq), changes); err != nil {
		s.seq--
		return err
	}
	if s.seq-s.snap >= compactEvery {
		return s.compact(ctx, tr)
	}
	return nil
}

// compact writes the whole state as the snapshot and deletes the journal, in
// one batch so that a crash leaves either the old or the new layout.
func (s *stateStore) compact(ctx context.Context, tr *translator.Translator) error {
	state, err := tr.MarshalState()
	if err != nil {
		return err
	}
	snap := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+len(state)), s.seq)
	ops := []*storage.Operation{storage.SetOperation("snapshot", append(snap, state...))}
	for n := s.snap + 1; n <= s.seq; n++ {
		ops = append(ops, storage.DeleteOperation(journalKey(n)))
	}
	if err := s.client.Batch(ctx, ops...); err != nil {
		return err
	}
	s.snap = s.seq
	return nil
}

// close compacts and closes the storage client.
func (s *stateStore) close(ctx context.Context, tr *translator.Translator) error {
	return errors.Join(s.compact(ctx, tr), s.client.Close(ctx))
}
