"""The simulator's stream view: appended text only, the bar from each chunk's estimate, and an override
(a snapshot, a rewrite) replaces the content box instead of appending to it."""

from quanda.components import ids
from quanda.components.simulator import progress_of
from quanda.plugins.simulator import SimulatorView
from quanda.core import QuandaToken

MID = "ab" * 12


def html(fragments):
    from fasthtml.common import to_xml
    return "".join(to_xml(f, indent=False) for f in fragments)


def chunk(i, n, seq):
    return QuandaToken("chunk", f"Simulated chunk {i}/{n}\n", f"({i}/{n})", seq)


def test_chunks_are_appended_and_the_bar_follows_the_estimate():
    view = SimulatorView(MID)
    view.feed(chunk(1, 4, 1))
    view.feed(chunk(2, 4, 2))
    out = html(view.flush())
    assert f'hx-swap-oob="beforeend:#{ids.sim_content_id(MID)}"' in out
    assert "Simulated chunk 1/4\nSimulated chunk 2/4\n" in out
    assert 'value="2" max="4"' in out and 'data-seq="2"' in out
    out = html([*view.flush()])  # nothing new: no content, no bar
    assert "Simulated" not in out and "progress" not in out


def test_an_override_replaces_the_content_and_never_appends():
    view = SimulatorView(MID)
    view.feed(chunk(1, 4, 1))
    view.flush()
    view.feed(QuandaToken("override", "Simulated chunk 1/4\nfresh\n", "(3/4)", 3))
    view.feed(chunk(4, 4, 4))
    fragments = view.flush()
    out = html(fragments)
    assert "beforeend" not in out, "an override must replace the content box, not append to it"
    content = [f for f in fragments if getattr(f, "attrs", {}).get("id") == ids.sim_content_id(MID)]
    assert len(content) == 1 and content[0].attrs["hx-swap-oob"] == "true"
    assert html(content).count("Simulated chunk 1/4") == 1 and "fresh" in out and "chunk 4/4" in out
    assert 'value="4" max="4"' in out


def test_the_end_shows_finished_or_stopped_from_the_progress_it_saw():
    view = SimulatorView(MID)
    view.feed(chunk(4, 4, 4))
    view.feed(QuandaToken("immutable", "", None, 5))
    assert "sim-status finished" in html(view.flush())
    stopped = SimulatorView(MID)
    stopped.feed(chunk(2, 4, 2))
    stopped.feed(QuandaToken("warning", "stopped", None, 3))
    stopped.feed(QuandaToken("immutable", "", None, 4))
    assert "sim-status stopped" in html(stopped.flush())
    blind = SimulatorView(MID)  # a tab that had every chunk: only the seal; the fact sim.ended tells the end
    blind.feed(QuandaToken("immutable", "", None, 5))
    out = html(blind.flush())
    assert "sim-status" not in out and 'id="sim-stop"' in out and "disabled" in out


def test_progress_comes_only_from_a_well_formed_estimate():
    assert progress_of("(3/10)") == (3, 10)
    for bad in (None, "", "3/10", "(3/10) ", "Simulated chunk 3/10", "(a/b)"):
        assert progress_of(bad) is None
