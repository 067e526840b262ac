"""The benchmark's instruments, for correctness only (never speed): machine info, the
llama2.c output parsers, the launcher's peak RSS, the JSON file and the plot. No C binary and
no real benchmark runs here."""

import json
import math
import sys

import numpy as np
import pytest

from minillama.bench import engine, launch, llama2c, machine, report, startup
from minillama.formats.llama2c import read_tokenizer_bin, write_tokenizer_bin


def fake_row(shape="stories15M", threads=1, with_c=True) -> dict:
    decode = {"engine": [240.0, 250.0, 245.0], "torch": [90.0, 91.0], "numpy": [125.0, 124.0]}
    peak = {"engine": 411.0, "torch": 401.0, "numpy": 406.0}
    parity = {}
    if with_c:
        decode.update(run=[350.0, 357.5], runq=[265.0, 280.0])
        peak.update(run=63.0, runq=57.0)
        parity = {"run": llama2c.parity([5, 5, 7], [5, 5, 7]),
                  "runq": llama2c.parity([5, 5, 5], [5, 5, 7])}
    return dict(shape=shape, threads=threads, tokens=64, decode=decode, ceiling=396.0, read_gbs=24.1,
                copy_gbs=11.6, prefill={"engine": [3300.0, 3400.0], "torch": [1300.0]}, outside=0.004,
                first_call_s=0.8, peak_mb=peak, parity=parity)


# ---------------------------------------------------------------------------------------
# machine.py
# ---------------------------------------------------------------------------------------


def test_machine_info_has_the_expected_keys():
    info = machine.machine_info(probe=False)
    assert {"cpu_model", "cpu_vendor", "cpu_family", "llvm_cpu", "isa", "isa_bits", "isa_features",
            "compiled_vector_bits", "cpu_count", "usable_cpus", "load_average", "env",
            "versions"} <= set(info)
    assert info["cpu_model"] and info["llvm_cpu"] and len(info["load_average"]) == 3
    assert {"NUMBA_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} <= set(info["env"])
    json.dumps(info)  # JSON-ready
    assert info["cpu_model"] in machine.describe(info)


def test_vector_isa_names_the_widest():
    assert machine.vector_isa({"sse2", "avx", "avx2", "avx512f"}) == ("AVX-512", 512)
    assert machine.vector_isa({"sse2", "avx", "avx2"}) == ("AVX2", 256)
    assert machine.vector_isa({"neon"}) == ("NEON", 128)
    assert machine.vector_isa(set()) == ("scalar", 0)


def test_compiled_vector_bits_reads_real_code():
    from numba import config

    assert machine.compiled_vector_bits() in ((None,) if config.DISABLE_JIT else (128, 256, 512))


# ---------------------------------------------------------------------------------------
# llama2c.py (parsers only: no binary runs)
# ---------------------------------------------------------------------------------------


def test_parse_tok_s():
    text = "[5][17]\nachieved tok/s: 351.428571\n"
    assert llama2c.parse_tok_s(text) == pytest.approx(351.428571)
    with pytest.raises(ValueError, match="achieved tok/s"):
        llama2c.parse_tok_s("malloc failed!\n")


def test_parse_ids_maps_numbered_pieces_and_eos_back():
    assert llama2c.parse_ids("[5][17]\n</s>\n[0]\n", steps=4) == [5, 17, 2, 0]
    # three ids of four steps: run.c picked BOS, which it does not print
    assert llama2c.parse_ids("[5][17][9]\n", steps=4) == [5, 17, 9, 1]


def test_numbered_tokenizer_bin_round_trips(tmp_path):
    path = tmp_path / "tokenizer.bin"
    write_tokenizer_bin(path, llama2c.NumberedPieces(300))
    pieces, scores, _ = read_tokenizer_bin(path, 300)
    assert pieces[1] == b"\n<s>\n" and pieces[2] == b"\n</s>\n" and pieces[299] == b"[299]"
    # what run.c prints for ids 7, 2, 259 (no byte pieces, no leading space to strip)
    printed = b"".join(pieces[i] for i in (7, 2, 259)).decode()
    assert llama2c.parse_ids(printed, steps=3) == [7, 2, 259]


def test_first_difference_and_parity():
    assert llama2c.first_difference([1, 2, 3], [1, 2, 3, 4]) is None
    assert llama2c.first_difference([1, 2, 3], [1, 5, 3]) == 1
    p = llama2c.parity([4, 4, 9, 9], [4, 4, 8])
    assert p == dict(compared=3, first_difference=2, c_id=9, engine_id=8)


def test_find_binaries_reports_what_is_missing(tmp_path):
    (tmp_path / "run").write_text("#!/bin/sh\n")
    (tmp_path / "run").chmod(0o755)
    found, problems = llama2c.find_binaries(tmp_path)
    assert list(found) == ["run"] and len(problems) == 1 and "runq" in problems[0]


# ---------------------------------------------------------------------------------------
# launch.py and startup.py
# ---------------------------------------------------------------------------------------


def test_launch_times_output_and_reports_the_childs_own_peak():
    big = np.ones(200 * 2**20 // 8)  # this process peaks above 200 MB; the child must not inherit it
    code = "import sys, time; sys.stdout.write('ab'); sys.stdout.flush(); time.sleep(0.05); print('cd')"
    r = launch.launch([sys.executable, "-c", code], skip_bytes=2)
    del big
    assert r["returncode"] == 0 and r["stdout"] == "abcd\n"
    assert 0 < r["first_output_s"] <= r["exit_s"]
    assert 0 < r["peak_mb"] < 150


def test_time_generate_skips_the_warm_up_and_the_prompt(monkeypatch):
    calls = []

    def fake_launch(cmd, env=None, skip_bytes=0):
        calls.append((cmd, skip_bytes))
        return dict(returncode=0, stdout="Once upon\n", stderr="", first_output_s=1.0 + len(calls),
                    exit_s=2.0 + len(calls), peak_mb=180.0)

    monkeypatch.setattr(startup, "launch", fake_launch)
    g = startup.time_generate(runs=2)
    assert len(calls) == 3 and calls[0][1] == len(startup.GENERATE_PROMPT)
    assert g["first_token_s"] == [3.0, 4.0] and g["exit_s"] == [4.0, 5.0] and g["text"] == "Once upon"
    assert "--max-new-tokens" in g["cmd"]


# ---------------------------------------------------------------------------------------
# report.py and the command line
# ---------------------------------------------------------------------------------------


def test_tables_show_c_columns_only_when_measured(capsys):
    report.print_decode_table([fake_row(with_c=False)])
    assert "run tok/s" not in capsys.readouterr().out
    rows = [fake_row(), fake_row(threads=2)]
    report.print_decode_table(rows)
    report.print_detail_table(rows)
    out = capsys.readouterr().out
    assert "run tok/s" in out and "x run" in out and "245 (240-250)" in out
    lines = report.parity_lines(rows)
    assert lines[0].startswith("C greedy ids match engine: yes")
    assert "first difference at position 2" in lines[1]


def test_write_json_keeps_every_row(tmp_path):
    row = fake_row()
    row["prefill"]["torch"] = []
    path = tmp_path / "b.json"
    report.write_json(path, dict(machine={"cpu_model": "x"}, rows=[row], nan=math.nan))
    back = json.loads(path.read_text())
    assert back["rows"][0]["decode"] == row["decode"] and back["nan"] is None


def test_plot_writes_a_png(tmp_path):
    rows = [fake_row(s, n) for s in ("stories15M", "stories110M") for n in (1, 2)]
    path = tmp_path / "b.png"
    report.plot_decode(path, rows, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_contradicting_generate_flags_are_refused(capsys):
    assert engine.main(["--no-generate", "--generate-only"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_bench_formats_measures_every_format_it_is_given(tmp_path, capsys):
    """The memory bench on the course shape: each format written, loaded in a child, a row
    printed; what the child reports about the engine is checked against the shape by hand."""
    from minillama.bench import formats
    from minillama.config import get_preset

    out = tmp_path / "f.json"
    assert formats.main(["--shape", "course", "--formats", "gguf:q8_0,llama2c", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["format"] for r in rows] == ["gguf:q8_0", "llama2c"]
    a = get_preset("course")
    matrices = a.n_layers * (2 * a.dim * a.dim + 2 * a.dim * a.n_kv_heads * a.head_dim
                             + 3 * a.dim * a.ffn_hidden_dim)
    norms = (2 * a.n_layers + 1) * a.dim
    emb = a.vocab_size * a.dim
    assert rows[1]["weights"] == 4 * (matrices + norms + emb)  # float32, output tied to tok_embeddings
    rope_tables = 2 * a.max_seq_len * (a.head_dim // 2)  # v0 keeps llama2.c's old cos and sin tables
    assert rows[1]["file_bytes"] == 28 + 4 * (matrices + norms + emb + rope_tables)  # 7 int32 header
    assert all(r["drop"]["peak_above_base"] > 0 for r in rows)
    assert "peak/file" in capsys.readouterr().out
