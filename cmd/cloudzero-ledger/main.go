// Command cloudzero-ledger prints what the CloudZero emulator accepted: per
// stream, bucket (timestamp) and element, the value and its share of the bucket,
// with a small text bar.
//
//	cloudzero-ledger [-filters] [-width 30] [-expect STREAM=TOTAL]... [-url http://127.0.0.1:8089 | FILE | -]
//
// It reads the emulator's ledger JSON (GET /emulator/ledger) from -url, a file, or
// stdin. With -filters each element is also broken down by filter values. Each
// -expect compares a stream's total with an expected value (exactly) and makes the
// exit status 3 when one differs.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

func main() {
	url := flag.String("url", "", "emulator base URL (reads URL/emulator/ledger)")
	filters := flag.Bool("filters", false, "break each element down by filter values")
	width := flag.Int("width", 30, "width of the share bars")
	var expects []string
	flag.Func("expect", "STREAM=TOTAL: check that the stream's total is exactly TOTAL (repeatable)", func(s string) error {
		name, v, ok := strings.Cut(s, "=")
		if _, isNum := new(big.Rat).SetString(v); !ok || name == "" || !isNum {
			return errors.New("want STREAM=TOTAL")
		}
		expects = append(expects, s)
		return nil
	})
	flag.Parse()

	var l emulator.Ledger
	if err := load(&l, *url, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "cloudzero-ledger:", err)
		os.Exit(1)
	}
	if err := render(os.Stdout, &l, options{filters: *filters, width: *width}); err != nil {
		fmt.Fprintln(os.Stderr, "cloudzero-ledger:", err)
		os.Exit(1)
	}
	if len(expects) > 0 && !check(os.Stdout, &l, expects) {
		os.Exit(3)
	}
}

// check compares stream totals with the expected ones and prints one line each.
func check(w io.Writer, l *emulator.Ledger, expects []string) bool {
	ok := true
	for _, e := range expects {
		name, v, _ := strings.Cut(e, "=")
		want, _ := new(big.Rat).SetString(v)
		got := new(big.Rat)
		for _, s := range l.Streams {
			if s.Name == name {
				for _, en := range s.Entries {
					if x, good := new(big.Rat).SetString(en.Value); good {
						got.Add(got, x)
					}
				}
			}
		}
		verdict := "OK"
		if got.Cmp(want) != 0 {
			verdict, ok = "MISMATCH, difference "+emulator.FormatDecimal(new(big.Rat).Sub(got, want)), false
		}
		fmt.Fprintf(w, "check %s: received %s, expected %s: %s\n", name, emulator.FormatDecimal(got), emulator.FormatDecimal(want), verdict)
	}
	return ok
}

func load(l *emulator.Ledger, url string, args []string) error {
	var r io.Reader
	switch {
	case url != "" && len(args) == 0:
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(strings.TrimRight(url, "/") + "/emulator/ledger")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET ledger: %s", resp.Status)
		}
		r = resp.Body
	case url == "" && len(args) == 1 && args[0] != "-":
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	case url == "" && (len(args) == 0 || args[0] == "-"):
		r = os.Stdin
	default:
		return errors.New("give -url, one file, or nothing (stdin)")
	}
	return json.NewDecoder(r).Decode(l)
}

type options struct {
	filters bool
	width   int
}

// row is one line under a bucket: an element, or one filter combination of it.
type row struct {
	label string
	value *big.Rat
}

// bucket is one (stream, timestamp): its elements, largest first.
type bucket struct {
	ts     string
	total  *big.Rat
	elems  []row
	detail map[string][]row // element -> its filter combinations
}

func render(w io.Writer, l *emulator.Ledger, o options) error {
	if len(l.Streams) == 0 {
		fmt.Fprintln(w, "No records accepted.")
	}
	for _, s := range l.Streams {
		buckets, total, err := bucketsOf(s)
		if err != nil {
			return fmt.Errorf("stream %s: %w", s.Name, err)
		}
		keys := "no filter"
		if len(s.FilterKeys) > 0 {
			keys = "filter " + strings.Join(s.FilterKeys, ", ")
		}
		fmt.Fprintf(w, "%s  (%s, %s)  total %s, %d records applied\n",
			s.Name, s.Granularity, keys, emulator.FormatDecimal(total), s.RecordsApplied)
		for _, b := range buckets {
			fmt.Fprintf(w, "  %s  total %s\n", b.ts, emulator.FormatDecimal(b.total))
			printRows(w, "    ", b.elems, b.total, o.width, func(r row) {
				if o.filters {
					printRows(w, "        ", b.detail[r.label], b.total, o.width/2, nil)
				}
			})
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Records accepted: %d.  Requests by status: %s.", l.RecordsAccepted, counts(l.RequestsByStatus))
	if len(l.RejectionsByReason) > 0 {
		fmt.Fprintf(w, "  Rejections: %s.", counts(l.RejectionsByReason))
	}
	if l.UnalignedRecords > 0 {
		fmt.Fprintf(w, "  Unaligned timestamps: %d.", l.UnalignedRecords)
	}
	fmt.Fprintln(w)
	return nil
}

// printRows prints rows with their shares of total, rounded so that they add up
// to exactly 100.0% when the rows make up the total.
func printRows(w io.Writer, indent string, rows []row, total *big.Rat, width int, after func(row)) {
	labelWidth := 0
	valueWidth := 0
	for _, r := range rows {
		labelWidth = max(labelWidth, len(r.label))
		valueWidth = max(valueWidth, len(emulator.FormatDecimal(r.value)))
	}
	tenths := shares(rows, total)
	for i, r := range rows {
		bar := strings.Repeat("#", int((tenths[i]*int64(width)+500)/1000))
		fmt.Fprintf(w, "%s%-*s  %*s  %5.1f%%  %s\n", indent, labelWidth, r.label, valueWidth,
			emulator.FormatDecimal(r.value), float64(tenths[i])/10, bar)
		if after != nil {
			after(r)
		}
	}
}

// shares returns each row's share of total in tenths of a percent. When the rows
// make up the total, they are rounded by the largest remainder method so that
// they add up to exactly 1000; otherwise each is rounded to the nearest.
func shares(rows []row, total *big.Rat) []int64 {
	out := make([]int64, len(rows))
	if total.Sign() <= 0 {
		return out
	}
	type rem struct {
		i int
		r *big.Rat
	}
	rems := make([]rem, len(rows))
	var sum int64
	rowsTotal := new(big.Rat)
	half := big.NewRat(1, 2)
	for i, r := range rows {
		rowsTotal.Add(rowsTotal, r.value)
		exact := new(big.Rat).Quo(new(big.Rat).Mul(r.value, big.NewRat(1000, 1)), total)
		floor := new(big.Int).Quo(exact.Num(), exact.Denom())
		out[i] = floor.Int64()
		sum += out[i]
		rems[i] = rem{i, new(big.Rat).Sub(exact, new(big.Rat).SetInt(floor))}
	}
	if rowsTotal.Cmp(total) != 0 {
		for _, r := range rems {
			if r.r.Cmp(half) >= 0 {
				out[r.i]++
			}
		}
		return out
	}
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].r.Cmp(rems[b].r) > 0 })
	for k := 0; sum < 1000 && k < len(rems); k++ {
		if rems[k].r.Sign() > 0 {
			out[rems[k].i]++
			sum++
		}
	}
	return out
}

// bucketsOf groups a stream's entries by timestamp (newest first) and element
// (largest first).
func bucketsOf(s emulator.StreamLedger) ([]*bucket, *big.Rat, error) {
	byTS := map[string]*bucket{}
	sums := map[string]map[string]*big.Rat{}
	total := new(big.Rat)
	for _, e := range s.Entries {
		v, ok := new(big.Rat).SetString(e.Value)
		if !ok {
			return nil, nil, fmt.Errorf("entry %s %s: bad value %q", e.Timestamp, e.ElementName, e.Value)
		}
		b := byTS[e.Timestamp]
		if b == nil {
			b = &bucket{ts: e.Timestamp, total: new(big.Rat), detail: map[string][]row{}}
			byTS[e.Timestamp] = b
			sums[e.Timestamp] = map[string]*big.Rat{}
		}
		if sums[e.Timestamp][e.ElementName] == nil {
			sums[e.Timestamp][e.ElementName] = new(big.Rat)
		}
		sums[e.Timestamp][e.ElementName].Add(sums[e.Timestamp][e.ElementName], v)
		b.detail[e.ElementName] = append(b.detail[e.ElementName], row{filterLabel(e.Filter), v})
		b.total.Add(b.total, v)
		total.Add(total, v)
	}
	out := make([]*bucket, 0, len(byTS))
	for ts, b := range byTS {
		for name, v := range sums[ts] {
			b.elems = append(b.elems, row{name, v})
		}
		sortRows(b.elems)
		for _, d := range b.detail {
			sortRows(d)
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ts > out[j].ts })
	return out, total, nil
}

func sortRows(rows []row) {
	sort.Slice(rows, func(i, j int) bool {
		if c := rows[i].value.Cmp(rows[j].value); c != 0 {
			return c > 0
		}
		return rows[i].label < rows[j].label
	})
}

func filterLabel(f map[string][]string) string {
	if len(f) == 0 {
		return "(no filter)"
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strings.Join(f[k], "|")
	}
	return strings.Join(parts, " ")
}

func counts(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
