package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

const sendExample = `  # Check a CSV backfill (a dry run), then send it, replacing what CloudZero holds for its keys:
  cloudzero send --stream api-requests backfill.csv
  CLOUDZERO_API_KEY=... cloudzero send --stream api-requests backfill.csv --yes

  CSV: a header of timestamp, granularity, element_name, value, then one column per filter key
  (several values split by "|"):
    timestamp,granularity,element_name,value,custom:feature
    2026-11-02T13:00:00Z,HOURLY,customer-42,1250,search|export
  JSON: {"records":[{...}]} or one record per line, fields as CloudZero's API names them.`

func runSend(ctx context.Context, args []string, e env) int {
	var sf sendFlags
	fs := newFlags("send", "--stream S [--op replace|sum] [--yes] FILE...", sendExample, e)
	sf.register(fs)
	stream := fs.String("stream", "", "CloudZero stream to write (required)")
	op := fs.String("op", "replace", "replace: each key's value becomes the file's total (idempotent); sum: added to what CloudZero holds")
	gran := fs.String("granularity", "", "granularity of records that give none: HOURLY or DAILY")
	files, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	apply, ok := sf.apply(fs, e)
	if !ok {
		return exitUsage
	}
	switch {
	case *stream == "":
		return usageError(e, fs, "--stream is required")
	case *op != string(czexporter.OpSum) && *op != string(czexporter.OpReplace):
		return usageError(e, fs, "--op must be replace or sum")
	case *gran != "" && !record.Granularity(strings.ToUpper(*gran)).Valid():
		return usageError(e, fs, "--granularity must be HOURLY or DAILY")
	case len(files) == 0:
		return usageError(e, fs, "no input files (use - for stdin)")
	}
	var probs problems
	var raws []rawRecord
	for _, f := range files {
		data, err := openInput(f, e.stdin)
		if err != nil {
			fmt.Fprintf(e.stderr, "cloudzero: %v\n", err)
			return exitUsage
		}
		raws = append(raws, readRecords(f, data, *stream, &probs)...)
	}
	return sendRecords(ctx, "send", raws, czexporter.Op(*op), record.Granularity(strings.ToUpper(*gran)), probs, sf, apply, e)
}

const replayExample = `  # An exporter ran with dry_run: true and dry_run_file: /tmp/cz.jsonl; send what it would have sent:
  cloudzero replay /tmp/cz.jsonl                 # the summary, nothing sent
  CLOUDZERO_API_KEY=... cloudzero replay /tmp/cz.jsonl --yes

  Each line is "stream operation body" and is applied as the exporter would have: sum lines add up,
  a replace line sets the key's total (later lines win), a sum after a replace adds to it.`

func runReplay(ctx context.Context, args []string, e env) int {
	var sf sendFlags
	fs := newFlags("replay", "[--yes] FILE...", replayExample, e)
	sf.register(fs)
	files, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	apply, ok := sf.apply(fs, e)
	if !ok {
		return exitUsage
	}
	if len(files) == 0 {
		return usageError(e, fs, "no dry_run_file given (use - for stdin)")
	}
	var probs problems
	var raws []rawRecord
	for _, f := range files {
		data, err := openInput(f, e.stdin)
		if err != nil {
			fmt.Fprintf(e.stderr, "cloudzero: %v\n", err)
			return exitUsage
		}
		raws = append(raws, readReplay(f, data, &probs)...)
	}
	return sendRecords(ctx, "replay", raws, "", "", probs, sf, apply, e)
}

func usageError(e env, fs *flag.FlagSet, msg string) int {
	fmt.Fprintf(e.stderr, "cloudzero: %s\n\n", msg)
	fs.Usage()
	return exitUsage
}

// plan is what a run sends: per operation, the merged records.
type plan struct {
	sets       map[czexporter.Op]*record.Set
	read       int // records read
	normalised int // timestamps moved to their bucket start
}

// pending is a key's fold of the records read for it, in order.
type pending struct {
	op    czexporter.Op
	value float64
	first int // index of the key's first record in the input
}

// newPlan merges records by key. With op (send), records of the same key
// add up and are sent with op. Without (replay), each record keeps its own
// operation and they fold in input order as CloudZero applies them: sums
// add up, a replace sets the total, a sum after a replace adds to it (the
// key is replaced with the sum). Each total must be a value the exporter
// would send (record.ValidValue, as the translator checks its totals
// after adding up): a key whose total is not is a problem, reported with
// the lines of its records.
func newPlan(cs []checked, op czexporter.Op, probs *problems) plan {
	type sk struct {
		stream string
		key    record.Key
	}
	fold := map[sk]*pending{}
	p := plan{sets: map[czexporter.Op]*record.Set{}, read: len(cs)}
	for i, c := range cs {
		if c.normalised {
			p.normalised++
		}
		k := sk{c.stream, c.key}
		f := fold[k]
		switch {
		case f == nil:
			fold[k] = &pending{op: c.op, value: c.value, first: i}
			if op != "" {
				fold[k].op = op
			}
		case op == "" && c.op == czexporter.OpReplace:
			*f = pending{op: czexporter.OpReplace, value: c.value, first: f.first}
		default:
			f.value += c.value
		}
	}
	bad := map[sk]error{}
	for k, f := range fold {
		if err := record.ValidValue(f.value); err != nil {
			bad[k] = err
			continue
		}
		s := p.sets[f.op]
		if s == nil {
			s = record.NewSet()
			p.sets[f.op] = s
		}
		s.Add(k.stream, k.key, f.value)
	}
	if len(bad) == 0 {
		return p
	}
	// Rare: a second pass finds the lines of the keys whose total is bad.
	lines := map[sk][]string{}
	for _, c := range cs {
		if k := (sk{c.stream, c.key}); bad[k] != nil {
			lines[k] = append(lines[k], c.at.String())
		}
	}
	keys := slices.Collect(maps.Keys(bad))
	slices.SortFunc(keys, func(a, b sk) int { return fold[a].first - fold[b].first })
	for _, k := range keys {
		at := lines[k]
		const shown = 10
		where := strings.Join(at[:min(len(at), shown)], ", ")
		if len(at) > shown {
			where += fmt.Sprintf(" and %d more", len(at)-shown)
		}
		*probs = append(*probs, fmt.Sprintf("%s: %d records of one key add up to a total that cannot be sent: %v", where, len(at), bad[k]))
	}
	return p
}

func (p plan) records() int {
	n := 0
	for _, s := range p.sets {
		n += s.Len()
	}
	return n
}

// ops returns the plan's operations, sum first (a replace that follows
// sends totals that do not depend on it).
func (p plan) ops() []czexporter.Op {
	var ops []czexporter.Op
	for _, op := range []czexporter.Op{czexporter.OpSum, czexporter.OpReplace} {
		if p.sets[op] != nil && p.sets[op].Len() > 0 {
			ops = append(ops, op)
		}
	}
	return ops
}

// printSummary prints, per stream and operation: records, buckets, the
// time range and the value total.
func (p plan) printSummary(w io.Writer, verb string) {
	fmt.Fprintf(w, "%s: %d records read, %d to send", verb, p.read, p.records())
	if d := p.read - p.records(); d > 0 {
		fmt.Fprintf(w, " (%d with the same key merged)", d)
	}
	if p.normalised > 0 {
		fmt.Fprintf(w, "; %d timestamps moved to the start of their bucket", p.normalised)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tOP\tRECORDS\tBUCKETS\tFROM\tTO\tTOTAL")
	for _, op := range p.ops() {
		s := p.sets[op]
		for _, stream := range s.Streams() {
			buckets := map[time.Time]bool{}
			var first, last time.Time
			total := 0.0
			for k, v := range s.Records(stream) {
				ts, _, _ := k.Bucket()
				buckets[ts] = true
				if first.IsZero() || ts.Before(first) {
					first = ts
				}
				if ts.After(last) {
					last = ts
				}
				total += v
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", stream, op, len(s.Records(stream)), len(buckets),
				first.Format(time.RFC3339), last.Format(time.RFC3339), record.FormatValue(total))
		}
	}
	_ = tw.Flush()
}

// sendRecords validates, prints the summary, and (with --yes) sends.
// op is send's operation for every record; replay's records have their own.
func sendRecords(ctx context.Context, verb string, raws []rawRecord, op czexporter.Op, gran record.Granularity, probs problems, sf sendFlags, apply bool, e env) int {
	cs := validate(raws, gran, e.now(), &probs)
	var p plan
	if len(probs) == 0 {
		p = newPlan(cs, op, &probs)
	}
	if len(probs) > 0 {
		for _, p := range probs {
			fmt.Fprintln(e.stderr, p)
		}
		fmt.Fprintf(e.stderr, "cloudzero: %d problems in the input; nothing was sent\n", len(probs))
		return exitUsage
	}
	p.printSummary(e.stdout, verb)
	if sf.perDay > 0 && p.records() > sf.perDay {
		// It could only wait for tomorrow's budget until --give-up-after.
		fmt.Fprintf(e.stderr, "cloudzero: %d records, more than --records-per-day %d: raise --records-per-day or split the input; nothing was sent\n",
			p.records(), sf.perDay)
		return exitUsage
	}
	if p.records() == 0 {
		fmt.Fprintln(e.stdout, "nothing to send")
		return exitOK
	}
	if !apply {
		fmt.Fprintln(e.stdout, "dry run: nothing was sent; run again with --yes to apply")
		return exitOK
	}
	key, err := sf.apiKey(e)
	if err != nil {
		fmt.Fprintf(e.stderr, "cloudzero: %v\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, sf.giveUpAfter)
	defer cancel()
	var outcomes []*outcome
	for _, op := range p.ops() {
		o, err := deliver(ctx, op, p.sets[op], sf, key, e)
		if err != nil {
			fmt.Fprintf(e.stderr, "cloudzero: %v\n", err)
			return exitUsage
		}
		outcomes = append(outcomes, o)
	}
	return report(e, outcomes)
}

// outcome is what became of each record of one operation.
type outcome struct {
	op        czexporter.Op
	set       *record.Set
	mu        sync.Mutex
	applied   map[string]map[record.Key]bool
	refused   map[string]map[record.Key]string // the refusal, as CloudZero answered
	sent      atomic.Int64
	ambiguous atomic.Int64 // sum: records of failed requests that may have been applied
}

func (o *outcome) settled(stream string, _ czexporter.Op, keys []record.Key, refused error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, k := range keys {
		if refused == nil {
			o.applied[stream][k] = true
			delete(o.refused[stream], k)
		} else {
			o.refused[stream][k] = refused.Error()
		}
	}
	if refused == nil {
		o.sent.Add(int64(len(keys)))
	}
}

// deliver sends set with op through the exporter's delivery core (its
// chunking, rate limiter, retries with Retry-After, bisection of refused
// requests) until everything is settled or ctx ends.
func deliver(ctx context.Context, op czexporter.Op, set *record.Set, sf sendFlags, key string, e env) (*outcome, error) {
	o := &outcome{op: op, set: set, applied: map[string]map[record.Key]bool{}, refused: map[string]map[record.Key]string{}}
	for _, s := range set.Streams() {
		o.applied[s], o.refused[s] = map[record.Key]bool{}, map[record.Key]string{}
	}
	total := set.Len()
	if ctx.Err() != nil { // interrupted or given up before this operation began: nothing of it is sent
		return o, nil
	}
	log := zap.New(commandCore{zapcore.NewCore(zapcore.NewConsoleEncoder(zapcore.EncoderConfig{MessageKey: "msg", LevelKey: "level",
		EncodeLevel: zapcore.LowercaseLevelEncoder}), zapcore.AddSync(e.stderr), zapcore.WarnLevel)})
	d, err := czexporter.NewDelivery(czexporter.DeliveryConfig{
		Op:                   op,
		TotalsGiven:          true,
		FlushInterval:        24 * time.Hour, // only Flush sends
		ShutdownTimeout:      time.Second,
		MaxKeys:              total,
		Backoff:              czexporter.Backoff{InitialInterval: sf.retryInitial, MaxInterval: sf.retryMax, Multiplier: 1.5, RandomizationFactor: 0.5},
		MaxRecordsPerRequest: sf.perRequest,
		Limiter:              czexporter.NewLimiter(czexporter.LimiterConfig{RecordsPerSecond: sf.perSecond, Burst: sf.burst, RecordsPerDay: sf.perDay}),
		Client:               sf.client(key),
		Logger:               log,
		Observer: czexporter.Observer{
			Settled:   o.settled,
			Ambiguous: func(_ context.Context, _ string, records int, _ float64) { o.ambiguous.Add(int64(records)) },
		},
	})
	if err != nil {
		return nil, err
	}
	if err := d.Start(ctx); err != nil {
		return nil, err
	}
	if err := d.AddRecords(ctx, set); err != nil {
		_ = d.Shutdown(ctx)
		return nil, err
	}
	stop := startProgress(e, fmt.Sprintf("%s %d records", op, total), func() (int, int) {
		o.mu.Lock()
		defer o.mu.Unlock()
		n := 0
		for _, m := range o.refused {
			n += len(m)
		}
		return int(o.sent.Load()) + n, total
	})
	flushErr := d.Flush(ctx)
	stop()
	// What Flush did not send is reported as not sent. Once ctx has ended
	// (Ctrl-C, --give-up-after) nothing more may be sent: the Delivery's
	// shutdown flush gets a deadline already past, so it sends nothing and
	// a request under way is cancelled.
	sctx := context.WithoutCancel(ctx)
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		sctx, cancel = context.WithDeadline(sctx, time.Now())
		defer cancel()
	}
	_ = d.Shutdown(sctx)
	if flushErr != nil {
		fmt.Fprintf(e.stderr, "cloudzero: %s: stopped before everything was settled: %v\n", op, flushErr)
	}
	return o, nil
}

// commandCore is the Delivery's log as the command shows it: without the
// shutdown message that records not confirmed "are lost" (true of a
// collector without storage; for the command they are in the input files,
// listed as not sent, and running again sends them).
type commandCore struct{ zapcore.Core }

// shutdownUnsentMsg starts the Delivery's message (exporter/delivery.go,
// Shutdown without storage).
const shutdownUnsentMsg = "Shutting down with records CloudZero has not confirmed"

func (c commandCore) With(fields []zapcore.Field) zapcore.Core {
	return commandCore{c.Core.With(fields)}
}

func (c commandCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if strings.HasPrefix(ent.Message, shutdownUnsentMsg) {
		return ce
	}
	return c.Core.Check(ent, ce)
}

// report prints what was applied, refused and not sent, and returns the
// exit status.
func report(e env, outcomes []*outcome) int {
	var applied, refused, unsent int
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tOP\tBUCKET\tAPPLIED\tREFUSED\tNOT SENT")
	reasons := map[string]int{}
	for _, o := range outcomes {
		for _, stream := range o.set.Streams() {
			type counts struct{ applied, refused, unsent int }
			byBucket := map[time.Time]*counts{}
			for k := range o.set.Records(stream) {
				ts, _, _ := k.Bucket()
				c := byBucket[ts]
				if c == nil {
					c = &counts{}
					byBucket[ts] = c
				}
				switch r, isRefused := o.refused[stream][k]; {
				case o.applied[stream][k]:
					c.applied++
				case isRefused:
					c.refused++
					reasons[r]++
				default:
					c.unsent++
				}
			}
			for _, ts := range slices.SortedFunc(maps.Keys(byBucket), time.Time.Compare) {
				c := byBucket[ts]
				applied, refused, unsent = applied+c.applied, refused+c.refused, unsent+c.unsent
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", stream, o.op, ts.Format(time.RFC3339), c.applied, c.refused, c.unsent)
			}
		}
		if n := o.ambiguous.Load(); n > 0 && o.op == czexporter.OpSum {
			fmt.Fprintf(e.stderr, "cloudzero: warning: %d sum records were retried after failures that CloudZero may have applied (5xx, timeouts): those may count twice; replace has no such risk\n", n)
		}
	}
	_ = tw.Flush()
	texts := slices.Collect(maps.Keys(reasons))
	sort.Strings(texts)
	for _, r := range texts {
		fmt.Fprintf(e.stderr, "refused (%d records): %s\n", reasons[r], r)
	}
	fmt.Fprintf(e.stdout, "applied %d records, refused %d, not sent %d\n", applied, refused, unsent)
	switch {
	case refused == 0 && unsent == 0:
		return exitOK
	case applied == 0:
		return exitNone
	}
	return exitPartial
}

// startProgress shows progress on stderr until the returned stop: a bar
// on a terminal, else a line every progressTick when something moved.
func startProgress(e env, what string, done func() (int, int)) (stop func()) {
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := progressTick
		if e.terminal {
			tick = 200 * time.Millisecond
		}
		t := time.NewTicker(tick)
		defer t.Stop()
		last := -1
		show := func(final bool) {
			n, total := done()
			if n == last && !final {
				return
			}
			last = n
			if e.terminal {
				const width = 30
				fill := width * n / max(total, 1)
				fmt.Fprintf(e.stderr, "\r%s [%s%s] %d/%d", what, strings.Repeat("#", fill), strings.Repeat(".", width-fill), n, total)
				if final {
					fmt.Fprintln(e.stderr)
				}
				return
			}
			fmt.Fprintf(e.stderr, "%s: %d/%d settled\n", what, n, total)
		}
		for {
			select {
			case <-quit:
				show(true)
				return
			case <-t.C:
				show(false)
			}
		}
	}()
	return func() { close(quit); <-finished }
}
