package loadgen

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// receiver is an OTLP/gRPC server that refuses every refuseEvery-th request
// and adds up what it accepts.
type receiver struct {
	pmetricotlp.UnimplementedGRPCServer
	mu          sync.Mutex
	n           int
	refuseEvery int
	totals      map[Key]int64
}

func (r *receiver) Export(_ context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	if r.refuseEvery > 0 && r.n%r.refuseEvery == 0 {
		return pmetricotlp.NewExportResponse(), status.Error(codes.Unavailable, "busy")
	}
	dps := req.Metrics().ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Sum().DataPoints()
	for i := range dps.Len() {
		dp := dps.At(i)
		c, _ := dp.Attributes().Get("customer.id")
		f, _ := dp.Attributes().Get("feature")
		r.totals[Key{c.Str(), f.Str()}] += dp.IntValue()
	}
	return pmetricotlp.NewExportResponse(), nil
}

func TestRunSendsWhatItReports(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	rcv := &receiver{refuseEvery: 7, totals: map[Key]int64{}}
	pmetricotlp.RegisterGRPCServer(srv, rcv)
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{Endpoint: l.Addr().String(), Metric: "m", Customers: 30, Features: 3, Points: 25_000, PointsPerRequest: 500, Workers: 3})
	require.NoError(t, err)
	assert.Equal(t, 25_000, res.Points)
	assert.Positive(t, res.Refused, "refused requests were retried")
	assert.Len(t, res.Totals, 90)
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	assert.Equal(t, res.Totals, rcv.totals)
}
