"""Wall-clock minus JAX's compilation: :class:`CompileClock` collects the time spans of
JAX's tracing, lowering and XLA compilation events (``jax.monitoring``), so that a phase's
wall time can be split into compile overhead and the rest. Used by
``benchmarks/run_numpyro.py`` and ``benchmarks/ensemble_vs_laps.py``."""


class CompileClock:
    """Records every JAX compile-event span from its creation on."""

    EVENTS = (
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )

    def __init__(self):
        import jax

        self.spans = []
        jax.monitoring.register_event_time_span_listener(self._listen)

    def _listen(self, event, start, end, **kwargs):
        if event in self.EVENTS:
            self.spans.append((start, end))

    def overlap(self, t0, t1):
        """Length of the union of the recorded spans inside ``[t0, t1]`` (nested traces
        are counted once)."""
        segs = sorted((max(s, t0), min(e, t1)) for s, e in self.spans if e > t0 and s < t1)
        total, cur_s, cur_e = 0.0, None, None
        for s, e in segs:
            if cur_e is None or s > cur_e:
                if cur_e is not None:
                    total += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        if cur_e is not None:
            total += cur_e - cur_s
        return total
