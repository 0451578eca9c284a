"""The benchmark result as a table for people (`--json` prints the dict itself)."""

from __future__ import annotations

PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _si(value: float, unit: str) -> str:
    for scale, prefix in PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _mib(value: int | None) -> str:
    return "n/a (no GPU)" if value is None else f"{value / 2 ** 20:,.0f} MiB"


def _tokens(per_second: float | None) -> str:
    return f" ({per_second:,.0f} tokens/s)" if per_second else ""


def format_table(result: dict) -> str:
    """Two columns, one measured quantity per line."""
    rows = [
        ("strategy", f"{result['strategy']} ({result['device']})"),
        ("settings", f"global batch {result['global_batch_size']}, precision {result['precision']}, "
                     f"steps_per_execution {result['steps_per_execution']}, jit_compile {result['jit_compile']}"),
        ("start-up (data + model)", f"{result['startup_seconds']:.2f} s"),
        ("compile (first execution)", f"{result['compile_seconds']:.2f} s"),
        ("step time", f"{result['step_seconds'] * 1e3:.3g} ms (mean of {result['timed_steps']} steps after "
                      f"{result['warmup_steps']} warm-up)"),
        ("throughput", f"{result['examples_per_second']:,.0f} examples/s" + _tokens(result.get("tokens_per_second"))),
        ("input pipeline alone", f"{result['pipeline_examples_per_second']:,.0f} examples/s "
                                 f"({result['pipeline_ratio']:.1f}x what the model consumes)"),
        ("FLOPs per example", f"{_si(result['flops_per_example'], 'FLOP')} (forward + backward)"),
        ("achieved", _si(result["achieved_flops_per_second"], "FLOP/s")),
        ("peak matmul", f"{_si(result['peak_flops_per_second'], 'FLOP/s')} ({result['peak_dtype']}, "
                        f"{result['peak_matmul_size']}x{result['peak_matmul_size']}, measured now)"),
        ("MFU", f"{result['mfu'] * 100:.3g}% of the peak"),
        ("peak host memory", _mib(result["host_memory_peak_bytes"])),
        ("peak device memory", _mib(result["device_memory_peak_bytes"])),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"nntrain bench: {result['experiment']}"]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    lines.append(f"  FLOPs counted by the {result['flops_method']}")
    return "\n".join(lines)
