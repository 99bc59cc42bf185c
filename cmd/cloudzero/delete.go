package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

const deleteExample = `  # A bad deploy sent wrong usage on 2026-11-02 between 13:00 and 18:00 UTC; see what goes, then delete:
  cloudzero delete --stream api-requests --from 2026-11-02T13:00:00Z --to 2026-11-02T18:00:00Z
  CLOUDZERO_API_KEY=... cloudzero delete --stream api-requests --from 2026-11-02T13:00:00Z --to 2026-11-02T18:00:00Z --yes

  Buckets whose start is in [--from, --to) are deleted, each with one selector; --element and
  --filter narrow what is deleted in each (a record matches a --filter key when its values are
  among the given ones).`

// maxDeleteBuckets bounds one run: ten years of hours.
const maxDeleteBuckets = 24 * 366 * 10

// selectorsPerRequest: delete selectors per request, each counted as a
// record by the rate limiter.
const selectorsPerRequest = 1000

type filterFlag map[string][]string

func (f filterFlag) String() string { return fmt.Sprint(map[string][]string(f)) }

func (f filterFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" || v == "" {
		return errors.New("want key=value, e.g. custom:feature=search")
	}
	f[k] = append(f[k], v)
	return nil
}

func runDelete(ctx context.Context, args []string, e env) int {
	var sf sendFlags
	fs := newFlags("delete", "--stream S --from T --to T [--granularity G] [--element E] [--filter k=v]... [--yes]", deleteExample, e)
	sf.register(fs)
	stream := fs.String("stream", "", "CloudZero stream (required)")
	from := fs.String("from", "", "first bucket: RFC 3339 or a date; moved to its bucket start (required)")
	to := fs.String("to", "", "end of the range, exclusive: RFC 3339 or a date (required)")
	gran := fs.String("granularity", "HOURLY", "granularity of the stream: HOURLY or DAILY")
	element := fs.String("element", "", "delete only this element's records")
	filter := filterFlag{}
	fs.Var(filter, "filter", "delete only records within this filter value (key=value, repeatable; values of one key are OR-ed)")
	rest, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	apply, ok := sf.apply(fs, e)
	if !ok {
		return exitUsage
	}
	g := record.Granularity(strings.ToUpper(*gran))
	if len(rest) > 0 {
		return usageError(e, fs, "delete takes no file arguments")
	}
	if err := record.ValidStreamName(*stream); err != nil {
		return usageError(e, fs, fmt.Sprintf("--stream %q: %v", *stream, err))
	}
	if !g.Valid() {
		return usageError(e, fs, "--granularity must be HOURLY or DAILY")
	}
	start, err1 := parseTime(*from)
	end, err2 := parseTime(*to)
	if err := errors.Join(prefix("--from", err1), prefix("--to", err2)); err != nil {
		return usageError(e, fs, err.Error())
	}
	start = g.Truncate(start)
	if !start.Before(end) {
		return usageError(e, fs, "--to must be after --from's bucket start: the range is [from, to)")
	}
	var dims []record.Dimension
	for k, v := range filter {
		dims = append(dims, record.Dimension{Key: k, Values: v})
	}
	// The selector's element and filter follow the record rules.
	if _, err := record.NewKey(record.Record{Timestamp: start, Granularity: g, ElementName: orAny(*element), Filter: dims}); err != nil {
		return usageError(e, fs, fmt.Sprintf("--element/--filter: %v", err))
	}
	var sels []czexporter.DeleteSelector
	for ts := start; ts.Before(end); ts = ts.Add(g.Duration()) {
		if len(sels) == maxDeleteBuckets {
			return usageError(e, fs, fmt.Sprintf("more than %d buckets in the range", maxDeleteBuckets))
		}
		sels = append(sels, czexporter.DeleteSelector{Timestamp: ts, Granularity: g, ElementName: *element, Filter: dims})
	}
	what := "every record"
	if *element != "" || len(dims) > 0 {
		what = fmt.Sprintf("records of element %q within filter %v", orAny(*element), filter)
	}
	fmt.Fprintf(e.stdout, "delete: stream %s, %d %s buckets from %s to %s (last bucket %s): %s\n", *stream, len(sels), g,
		start.Format(time.RFC3339), end.Format(time.RFC3339), sels[len(sels)-1].Timestamp.Format(time.RFC3339), what)
	if !apply {
		fmt.Fprintln(e.stdout, "dry run: nothing was deleted; run again with --yes to apply")
		return exitOK
	}
	key, err := sf.apiKey(e)
	if err != nil {
		fmt.Fprintf(e.stderr, "cloudzero: %v\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, sf.giveUpAfter)
	defer cancel()
	return deleteBuckets(ctx, *stream, sels, sf, key, e)
}

func prefix(p string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", p, err)
}

func orAny(element string) string {
	if element == "" {
		return "any"
	}
	return element
}

// chunkOutcome is what became of one request's buckets.
type chunkOutcome struct {
	first, last time.Time
	buckets     int
	state       string // deleted, refused, not sent
}

// deleteBuckets sends the selectors in requests of selectorsPerRequest,
// in time order, with the exporter's rate limiter and retry policy (a
// delete is idempotent: retrying one that may have been applied is
// harmless).
func deleteBuckets(ctx context.Context, stream string, sels []czexporter.DeleteSelector, sf sendFlags, key string, e env) int {
	client := sf.client(key)
	limiter := czexporter.NewLimiter(czexporter.LimiterConfig{RecordsPerSecond: sf.perSecond, Burst: sf.burst, RecordsPerDay: sf.perDay})
	bo := czexporter.Backoff{InitialInterval: sf.retryInitial, MaxInterval: sf.retryMax, Multiplier: 1.5, RandomizationFactor: 0.5}
	var outcomes []chunkOutcome
	var settled atomic.Int64
	stop := startProgress(e, fmt.Sprintf("delete %d buckets", len(sels)), func() (int, int) { return int(settled.Load()), len(sels) })
	var stopped error
	for i := 0; i < len(sels); i += selectorsPerRequest {
		chunk := sels[i:min(i+selectorsPerRequest, len(sels))]
		o := chunkOutcome{first: chunk[0].Timestamp, last: chunk[len(chunk)-1].Timestamp, buckets: len(chunk), state: "not sent"}
		if stopped == nil {
			err := sendDelete(ctx, client, limiter, bo, stream, chunk, e)
			switch {
			case err == nil:
				o.state = "deleted"
			case czexporter.IsPermanent(err):
				o.state = "refused"
				fmt.Fprintf(e.stderr, "refused (%d buckets from %s): %v\n", len(chunk), o.first.Format(time.RFC3339), err)
			default:
				stopped = err
				fmt.Fprintf(e.stderr, "cloudzero: stopped: %v\n", err)
			}
			settled.Add(int64(len(chunk)))
		}
		if n := len(outcomes); n > 0 && outcomes[n-1].state == o.state {
			outcomes[n-1].last, outcomes[n-1].buckets = o.last, outcomes[n-1].buckets+o.buckets
		} else {
			outcomes = append(outcomes, o)
		}
	}
	stop()
	return deleteReport(e, outcomes, len(sels))
}

// sendDelete sends one request, retrying what is not a refusal until ctx
// ends.
func sendDelete(ctx context.Context, client *czexporter.Client, limiter *czexporter.Limiter, bo czexporter.Backoff,
	stream string, chunk []czexporter.DeleteSelector, e env) error {
	if err := limiter.Wait(ctx, len(chunk)); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		err := client.Delete(ctx, stream, chunk)
		if err == nil || czexporter.IsPermanent(err) || ctx.Err() != nil {
			return err
		}
		delay := bo.Delay(attempt, err)
		fmt.Fprintf(e.stderr, "cloudzero: delete: %v; retrying in %s\n", err, delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// deleteReport lists the ranges by outcome and returns the exit status.
func deleteReport(e env, outcomes []chunkOutcome, total int) int {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tFROM\tLAST BUCKET\tBUCKETS")
	deleted := 0
	for _, o := range outcomes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", o.state, o.first.Format(time.RFC3339), o.last.Format(time.RFC3339), o.buckets)
		if o.state == "deleted" {
			deleted += o.buckets
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(e.stdout, "deleted %d of %d buckets\n", deleted, total)
	switch {
	case deleted == total:
		return exitOK
	case deleted == 0:
		return exitNone
	}
	fmt.Fprintln(e.stdout, "a delete is idempotent: run the same command again to finish")
	return exitPartial
}
