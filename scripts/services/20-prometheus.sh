# Prometheus (Debian package, a plain process) with monitoring/prometheus.yml and its rules;
# TSDB under .run/prometheus. --web.enable-lifecycle allows `curl -X POST .../-/reload`
# after editing the config or rules.
command -v prometheus >/dev/null || die "prometheus is not installed; run: make install"
mkdir -p "$RUN/prometheus"
start_service prometheus "http://127.0.0.1:9090/-/ready" \
  prometheus \
  --config.file="$ROOT/monitoring/prometheus.yml" \
  --web.listen-address=127.0.0.1:9090 \
  --storage.tsdb.path="$RUN/prometheus" \
  --storage.tsdb.retention.time=15d \
  --web.enable-lifecycle
