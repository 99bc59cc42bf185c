package cloudzeroexporter

import (
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// dropLogEvery bounds how often dropped data points are logged: the first
// drop at once, then one summary a minute while drops go on.
const dropLogEvery = time.Minute

// dropLog logs the data points the translator dropped, by reason, at most
// once per dropLogEvery: datapoints_dropped counts them, the log says that
// usage is being lost and why, also where nobody reads the metrics.
// Its memory is one count per drop reason.
type dropLog struct {
	mu      sync.Mutex
	last    time.Time
	pending map[translator.DropReason]int
}

func (d *dropLog) add(dropped map[translator.DropReason]int, log *zap.Logger) {
	if len(dropped) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pending == nil {
		d.pending = map[translator.DropReason]int{}
	}
	for r, n := range dropped {
		d.pending[r] += n
	}
	if now := time.Now(); now.Sub(d.last) >= dropLogEvery {
		d.last = now
		d.logLocked(log)
	}
}

// flush logs what was dropped since the last summary (at shutdown).
func (d *dropLog) flush(log *zap.Logger) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.logLocked(log)
}

func (d *dropLog) logLocked(log *zap.Logger) {
	if len(d.pending) == 0 {
		return
	}
	reasons := make([]string, 0, len(d.pending))
	for r := range d.pending {
		reasons = append(reasons, string(r))
	}
	sort.Strings(reasons)
	counts := d.pending
	log.Warn("Data points dropped (see the README's drop reasons; counted in datapoints_dropped)",
		zap.Object("dropped", zapcore.ObjectMarshalerFunc(func(enc zapcore.ObjectEncoder) error {
			for _, r := range reasons {
				enc.AddInt(r, counts[translator.DropReason(r)])
			}
			return nil
		})))
	d.pending = nil
}
