package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"shd-tcp-tools/internal/forward"
)

// ForwardNamespace is the prefix of tcp-pf's metrics.
const ForwardNamespace = "tcppf"

// Forward returns tcp-pf's registry: the standard metrics, srv's connection counts
// (Conns, prefix tcppf) and, with a host file, four series per entry (label host: the
// entry's HOST field):
//
//	tcppf_host_bytes{host}                the count the entry is ranked by (file + unwritten)
//	tcppf_host_relayed_bytes_total{host}  the bytes this process moved through the host
//	tcppf_host_connections_open{host}     connections being set up to or relayed through it
//	tcppf_host_healthy{host}              1, or 0 while the health checks set it aside
func Forward(srv *forward.Server) *prometheus.Registry {
	reg := NewRegistry()
	// The connection counts before the hosts': a connection's end is counted after its
	// host's open count went down, so a scrape that sees the end sees the host free.
	reg.MustRegister(inOrder{Conns(ForwardNamespace, srv.Stats), newHosts(ForwardNamespace, srv.Hosts)})
	return reg
}

// hosts describes the balancer's entries, read once per scrape.
type hosts struct {
	read                          func() []forward.HostStats
	bytes, relayed, open, healthy *prometheus.Desc
}

func newHosts(ns string, read func() []forward.HostStats) *hosts {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "host", name), help, []string{"host"}, nil)
	}
	return &hosts{
		read:    read,
		bytes:   d("bytes", "The host-file entry's count as the balancer ranks it: the file's count plus the bytes moved since the last write-back."),
		relayed: d("relayed_bytes_total", "Bytes this process relayed through the host, both ways."),
		open:    d("connections_open", "Connections being set up to or relayed through the host."),
		healthy: d("healthy", "1 while the host is in service, 0 while the health checks set it aside."),
	}
}

// Describe sends the descriptions of the host metrics.
func (h *hosts) Describe(ch chan<- *prometheus.Desc) {
	ch <- h.bytes
	ch <- h.relayed
	ch <- h.open
	ch <- h.healthy
}

// Collect reads the entries once and sends four series for each.
func (h *hosts) Collect(ch chan<- prometheus.Metric) {
	for _, e := range h.read() {
		healthy := 1.0
		if e.Aside {
			healthy = 0
		}
		ch <- prometheus.MustNewConstMetric(h.bytes, prometheus.GaugeValue, float64(e.Bytes), e.Name)
		ch <- prometheus.MustNewConstMetric(h.relayed, prometheus.CounterValue, float64(e.Relayed), e.Name)
		ch <- prometheus.MustNewConstMetric(h.open, prometheus.GaugeValue, float64(e.Open), e.Name)
		ch <- prometheus.MustNewConstMetric(h.healthy, prometheus.GaugeValue, healthy, e.Name)
	}
}
