package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.opentelemetry.io/collector/extension/xextension/storage"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/zap"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// Defaults of DeliveryConfig.
const (
	DefaultFlushInterval   = 5 * time.Minute
	DefaultShutdownTimeout = 20 * time.Second
	DefaultMaxKeys         = 1_000_000
	// settleDelay is how long after a bucket ends its keys are sent as
	// closed: points of the last seconds of a bucket arrive a little later.
	settleDelay = time.Minute
	// shutdownRetryEvery is how often a failed send is retried while
	// shutting down: the time left is short, and without storage what is
	// not delivered by then is lost.
	shutdownRetryEvery = 250 * time.Millisecond
)

// Errors of Consume.
var (
	// ErrLedgerFull: the usage would add record keys beyond MaxKeys. Nothing
	// was counted; retry later (keys are freed once their bucket is sent).
	ErrLedgerFull = errors.New("cloudzero: ledger full (max_keys): new record keys are refused until sent keys are freed")
	// ErrStopped: the Delivery is shutting down or was shut down.
	ErrStopped = errors.New("cloudzero: exporter stopped")
	// ErrNotStarted: Consume before Start, with storage.
	ErrNotStarted = errors.New("cloudzero: exporter not started")
)

// Backoff is the delay between retries of a failed send: InitialInterval,
// multiplied by Multiplier after each consecutive failure up to
// MaxInterval, each randomised by ±RandomizationFactor. Retries go on for as
// long as the process runs.
type Backoff struct {
	InitialInterval     time.Duration
	MaxInterval         time.Duration
	Multiplier          float64
	RandomizationFactor float64
}

// DeliveryConfig configures a Delivery. Zero values take the defaults.
type DeliveryConfig struct {
	// Op is OpSum (the default: each send carries what was not yet
	// confirmed, to the sum endpoint) or OpReplace (each send carries the
	// key's full total to the replace endpoint; needs Storage).
	Op         Op
	Translator translator.Settings
	// FlushInterval: a key of an open bucket is sent at most this often,
	// and only if it changed. Closed buckets are sent settleDelay after
	// they end.
	FlushInterval time.Duration
	// ShutdownTimeout bounds how long Shutdown flushes and retries.
	ShutdownTimeout time.Duration
	// MaxKeys bounds the ledger; beyond it Consume refuses usage that needs
	// new keys (ErrLedgerFull), while existing keys keep accepting.
	MaxKeys int
	Backoff Backoff
	// MaxRecordsPerRequest caps a request (default 5,000, at most 10,000);
	// a request also stays under 5 MB and holds one stream.
	MaxRecordsPerRequest int
	Limiter              *Limiter // nil: no client-side limit
	Client               *Client
	// DryRun, if set, receives each request body instead of CloudZero (one
	// line per request: the stream name, the operation and the JSON body,
	// separated by spaces); Client may then be nil.
	DryRun io.Writer
	// Storage keeps the ledger and the series state across restarts (nil:
	// memory only). The Delivery closes it at Shutdown.
	Storage storage.Client
	// TotalsGiven allows OpReplace without Storage: the caller adds each
	// key's full total in one run (AddRecords from a file), so no restart
	// can make a partial total.
	TotalsGiven bool
	Logger      *zap.Logger
	Observer    Observer
	Now         func() time.Time // default time.Now
}

// Delivery is the exporter's delivery core, independent of the collector:
// it translates metrics (translator), counts their usage into the ledger,
// persists both through the journal, and sends what the ledger holds
// (flusher, sender). Consume, Flush and Shutdown are safe for concurrent use.
type Delivery struct {
	cfg     DeliveryConfig
	log     *zap.Logger
	now     func() time.Time
	tr      *translator.Translator
	drops   dropLog
	chunker requestLimits

	compactMu sync.Mutex // one compaction at a time

	mu       sync.Mutex // guards everything below; never held across network I/O
	ledger   *ledger
	journal  *journal // nil without storage
	stopped  bool
	restored bool // the journal was read (Start): appending to it is safe
	// lastAlive is the latest time the restored journal shows the exporter
	// running (unix nanoseconds).
	lastAlive int64
	scratch   consumeScratch
	encBuf    []byte
	accepted  uint64 // requests accepted so far: a failed round that made progress retries soon

	started     bool
	flushReq    chan chan error
	compactReq  chan struct{} // asks the compactor for a snapshot
	compactDone chan struct{} // closed when the compactor stopped
	stopCompact context.CancelFunc
	stop        chan time.Time            // receives the shutdown deadline
	failing     map[uint16]*streamFailure // the flusher's: streams in their own backoff
	done        chan struct{}
	runCtx      context.Context
	cancel      context.CancelFunc
}

// NewDelivery checks cfg and returns a Delivery; Start restores its state
// and starts sending.
func NewDelivery(cfg DeliveryConfig) (*Delivery, error) {
	if cfg.Op == "" {
		cfg.Op = OpSum
	}
	if cfg.Op != OpSum && cfg.Op != OpReplace {
		return nil, fmt.Errorf("cloudzero: delivery must be sum or replace, not %q", cfg.Op)
	}
	if cfg.Op == OpReplace && cfg.Storage == nil && !cfg.TotalsGiven {
		return nil, errors.New("cloudzero: replace needs storage: without the stored totals, a restart would overwrite each bucket with a partial total")
	}
	if cfg.Client == nil && cfg.DryRun == nil {
		return nil, errors.New("cloudzero: a client (or a dry-run writer) is required")
	}
	cfg.FlushInterval = orDefault(cfg.FlushInterval, DefaultFlushInterval)
	cfg.ShutdownTimeout = orDefault(cfg.ShutdownTimeout, DefaultShutdownTimeout)
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.MaxRecordsPerRequest <= 0 {
		cfg.MaxRecordsPerRequest = DefaultMaxRecords
	}
	if cfg.MaxRecordsPerRequest > record.MaxRecordsPerRequest {
		return nil, fmt.Errorf("cloudzero: at most %d records per request", record.MaxRecordsPerRequest)
	}
	cfg.Backoff.InitialInterval = orDefault(cfg.Backoff.InitialInterval, time.Second)
	cfg.Backoff.MaxInterval = orDefault(cfg.Backoff.MaxInterval, 30*time.Second)
	if cfg.Backoff.Multiplier < 1 {
		cfg.Backoff.Multiplier = 1.5
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Translator.Now == nil {
		cfg.Translator.Now = cfg.Now
	}
	if cfg.Translator.MaxAge == 0 {
		cfg.Translator.MaxAge = 168 * time.Hour
	}
	tr, err := translator.New(cfg.Translator)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	d := &Delivery{
		cfg: cfg, log: log, now: cfg.Now, tr: tr, drops: dropLog{logger: log, seen: map[dropKey]*dropState{}},
		chunker:     requestLimits{MaxRecords: cfg.MaxRecordsPerRequest},
		ledger:      newLedger(cfg.Op, cfg.MaxKeys),
		flushReq:    make(chan chan error),
		compactReq:  make(chan struct{}, 1),
		compactDone: make(chan struct{}),
		failing:     map[uint16]*streamFailure{},
		stop:        make(chan time.Time, 1),
		done:        make(chan struct{}),
	}
	if cfg.Storage != nil {
		d.journal = &journal{client: cfg.Storage}
	}
	d.runCtx, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Start restores the ledger and series state from storage, if any, and
// starts the flusher.
func (d *Delivery) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started || d.stopped {
		return errors.New("cloudzero: Start called twice or after Shutdown")
	}
	if d.journal != nil {
		if err := d.restore(ctx); err != nil {
			return fmt.Errorf("storage: restoring the ledger: %w", err)
		}
	}
	d.started = true
	go d.run()
	cctx, cancel := context.WithCancel(context.Background())
	d.stopCompact = cancel
	go d.compactor(cctx)
	return nil
}

// consumeScratch is reused by each Consume: the records of the call, with
// their entry ids, and how to undo what the call changed.
type consumeScratch struct {
	adds  []pendingAdd
	undo  []undoAdd
	binds []uint32
}

type pendingAdd struct {
	stream string
	key    record.Key
	value  float64
	id     uint32  // noID until bound
	ref    *uint64 // the translator's word for this key: id+1
}

type undoAdd struct {
	id          uint32
	value       float64
	unsentSince int64
}

// Consume translates md and counts its usage into the ledger. It returns
// once the series state and the ledger increments are committed together
// (one journal record, with storage): after a nil error the usage survives
// a crash. On an error nothing changed, so the caller may retry the same
// data: ErrLedgerFull, a storage error, or ErrStopped.
func (d *Delivery) Consume(ctx context.Context, md pmetric.Metrics) (translator.Stats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return translator.Stats{}, ErrStopped
	}
	if d.journal != nil && !d.restored {
		return translator.Stats{}, ErrNotStarted // the stored journal is not read yet: appending would overwrite it
	}
	tx := d.tr.Begin(md)
	now := d.now().UnixNano()
	l, s := d.ledger, &d.scratch
	s.adds, s.undo, s.binds = s.adds[:0], s.undo[:0], s.binds[:0]

	newKeys := 0
	for _, o := range tx.Outputs() {
		id, ok := l.cached(o)
		if !ok {
			if id, ok = l.lookup(o.Stream, o.Key); ok {
				*o.Ref = uint64(id) + 1
			} else {
				id = noID
				newKeys++
			}
		}
		s.adds = append(s.adds, pendingAdd{stream: o.Stream, key: o.Key, value: o.Value, id: id, ref: o.Ref})
	}
	if l.live+newKeys > d.cfg.MaxKeys {
		tx.Rollback()
		return translator.Stats{}, ErrLedgerFull
	}
	if err := d.commitAdds(ctx, now, tx.Changes); err != nil {
		tx.Rollback()
		return translator.Stats{}, err
	}
	return tx.Commit(), nil
}

// commitAdds counts the scratch's adds into the ledger and journals them
// with the series changes. On an error nothing of them is left.
func (d *Delivery) commitAdds(ctx context.Context, now int64, changes func() []byte) error {
	l, s := d.ledger, &d.scratch
	for i := range s.adds {
		a := &s.adds[i]
		if a.id == noID {
			id, err := l.bind(noID, a.stream, a.key)
			if err != nil { // not reached: keys are built by record.AppendKey
				d.undoConsume()
				return err
			}
			a.id = id
			if a.ref != nil {
				*a.ref = uint64(id) + 1
			}
			s.binds = append(s.binds, id)
		} else {
			e := &l.entries[a.id]
			s.undo = append(s.undo, undoAdd{id: a.id, value: e.value, unsentSince: e.unsentSince})
		}
		l.add(a.id, a.value, now)
	}
	if d.journal == nil {
		return nil
	}
	if ch := changes(); len(s.adds) > 0 || ch != nil {
		d.encBuf = d.encodeConsume(d.encBuf[:0], now, ch)
		if err := d.journal.append(ctx, d.encBuf); err != nil {
			d.undoConsume()
			return fmt.Errorf("storage: %w", err)
		}
		if d.journal.wantsCompaction() {
			d.askCompaction()
		}
	}
	return nil
}

// AddRecords counts records given as such, not translated from metrics
// (the cloudzero command's files), into the ledger: every key of every
// stream of set, with its value. Keys must come from record.NewKey. It
// returns once they are committed, like Consume; on an error nothing
// changed: ErrLedgerFull, a storage error, ErrStopped or ErrNotStarted.
func (d *Delivery) AddRecords(ctx context.Context, set *record.Set) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return ErrStopped
	}
	if d.journal != nil && !d.restored {
		return ErrNotStarted
	}
	l, s := d.ledger, &d.scratch
	s.adds, s.undo, s.binds = s.adds[:0], s.undo[:0], s.binds[:0]
	newKeys := 0
	for _, stream := range set.Streams() {
		for k, v := range set.Records(stream) {
			id, ok := l.lookup(stream, k)
			if !ok {
				id = noID
				newKeys++
			}
			s.adds = append(s.adds, pendingAdd{stream: stream, key: k, value: v, id: id})
		}
	}
	if l.live+newKeys > d.cfg.MaxKeys {
		return ErrLedgerFull
	}
	return d.commitAdds(ctx, d.now().UnixNano(), func() []byte { return nil })
}

func (d *Delivery) undoConsume() {
	s := &d.scratch
	for _, u := range s.undo {
		e := &d.ledger.entries[u.id]
		e.value, e.unsentSince = u.value, u.unsentSince
	}
	for _, id := range s.binds {
		d.ledger.forget(id)
	}
}

// Flush sends everything the ledger holds, whatever flush_interval says,
// retrying failures until ctx ends. It returns nil once everything was
// sent (or dropped for a reason that is counted).
func (d *Delivery) Flush(ctx context.Context) error {
	d.mu.Lock()
	started := d.started
	d.mu.Unlock()
	if !started {
		return errors.New("cloudzero: Flush before Start")
	}
	reply := make(chan error, 1)
	select {
	case d.flushReq <- reply:
	case <-d.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown flushes everything, retrying failures, for at most
// ShutdownTimeout (or until ctx ends). With storage, what is still unsent
// stays stored for the next start; without, it is dropped, counted and
// logged with its units.
func (d *Delivery) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return nil
	}
	d.stopped = true
	started := d.started
	d.mu.Unlock()

	deadline := time.Now().Add(d.cfg.ShutdownTimeout) // real time: how long the process may take to stop
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	if started {
		d.stopCompact() // between two storage writes: the shutdown flush comes first
		d.stop <- deadline
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-d.done:
		case <-timer.C:
			d.cancel() // ends a request still under way: with sum, it counts as ambiguous
			<-d.done
		case <-ctx.Done():
			d.cancel()
			<-d.done
		}
		timer.Stop()
	}
	d.cancel()

	d.mu.Lock()
	st := d.ledger.stats(d.now().UnixNano())
	d.mu.Unlock()
	if d.journal == nil {
		if st.UnsentKeys > 0 {
			d.log.Error("Shutting down with records CloudZero has not confirmed; without storage they are lost",
				zap.Int("records", st.UnsentKeys), zap.Float64("units", st.UnsentUnits))
			d.cfg.Observer.dropped(context.Background(), "", "shutdown", st.UnsentKeys, st.UnsentUnits)
		}
		return nil
	}
	if st.UnsentKeys > 0 {
		d.log.Warn("Shutting down with records CloudZero has not confirmed; they stay in storage and are sent at the next start",
			zap.Int("records", st.UnsentKeys), zap.Float64("units", st.UnsentUnits))
	}
	// No snapshot here: the journal is complete, and writing one could
	// outlast shutdown_timeout. A snapshot write under way (it cannot be
	// cut) closes the storage when it ends; its snapshot never becomes
	// current.
	if started {
		select {
		case <-d.compactDone:
		case <-time.After(max(time.Until(deadline), 0)):
			go func() {
				<-d.compactDone
				_ = d.journal.client.Close(context.Background())
			}()
			return nil
		}
	}
	return d.journal.client.Close(context.Background())
}

// Stats describes the ledger now.
func (d *Delivery) Stats() LedgerStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ledger.stats(d.now().UnixNano())
}
