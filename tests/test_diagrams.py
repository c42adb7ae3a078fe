"""The plate diagrams (ssvae_lib.diagrams): read back from the daft PGM, their nodes and directed edges are
the factorisations of the models, recognition edges are dashed, and every figure renders with Agg."""
from collections import Counter

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.patches import Wedge  # noqa: E402

from ssvae_lib import diagrams, models  # noqa: E402

# each model as {variable: its parents}, one entry per factor; theta / phi are the parameters
M2 = {"y": (), "z": (), "x": ("y", "z", "theta"), "theta": ()}                    # Eq. 4
LABEL_FIRST = {"x": (), "y": ("x", "phi"), "z": ("x", "y", "phi"), "phi": ()}     # q(y|x) q(z|x,y), Eq. 5
STYLE_FIRST = {"x": (), "z": ("x", "phi"), "y": ("x", "z", "phi"), "phi": ()}     # q(z|x) q(y|x,z), §3.2
PAIR = {"z_shared": (), "z1": (), "z2": (), "x1": ("z_shared", "z1", "theta"), "x2": ("z_shared", "z2", "theta"),
        "theta": ()}                                                               # Locatello et al. 2020
CCVAE = {"y": (), "psi": (), "z_c": ("y", "psi"), "z_rest": (), "x": ("z_c", "z_rest", "theta"), "theta": ()}  # Joy 2021


def multilabel_model(k):
    labels = {f"y{i}": () for i in range(1, k + 1)}
    return {**labels, "z": (), "x": (*labels, "z", "theta"), "theta": ()}


CASES = {  # name: (draw, factorisation, observed, partially observed, recognition)
    "m2_generative": (diagrams.m2_generative, M2, {"x"}, set(), False),
    "label_first": (lambda: diagrams.recognition("label_first"), LABEL_FIRST, {"x"}, set(), True),
    "style_first": (lambda: diagrams.recognition("style_first"), STYLE_FIRST, {"x"}, set(), True),
    "multilabel_2": (lambda: diagrams.multilabel(2, ("shape", "scale")), multilabel_model(2), {"x"},
                     {"y1", "y2"}, False),
    "multilabel_4": (lambda: diagrams.multilabel(4), multilabel_model(4), {"x"}, {"y1", "y2", "y3", "y4"}, False),
    "weak_supervision_pair": (diagrams.weak_supervision_pair, PAIR, {"x1", "x2"}, set(), False),
    "ccvae": (diagrams.ccvae, CCVAE, {"x"}, {"y"}, False),
}


def edges(pgm):
    return Counter((e.node1.name, e.node2.name) for e in pgm._edges if e.directed)


def factor_edges(factorisation):
    return Counter((parent, child) for child, parents in factorisation.items() for parent in parents)


@pytest.fixture(params=list(CASES))
def case(request):
    draw, *expected = CASES[request.param]
    fig = draw()
    yield (request.param, fig, fig.pgm, *expected)
    plt.close(fig)


def test_nodes_are_the_models_variables(case):
    _, _, pgm, factorisation, observed, partial, _ = case
    assert set(pgm._nodes) == set(factorisation)
    assert {n for n, node in pgm._nodes.items() if node.observed} == observed
    assert {n for n, node in pgm._nodes.items() if node.fixed} == {"theta", "phi", "psi"} & set(factorisation)
    assert pgm.partially_observed == partial
    assert not any(pgm._nodes[n].observed for n in partial)


def test_directed_edges_are_the_factorisation(case):
    _, _, pgm, factorisation, *_ = case
    assert all(e.directed for e in pgm._edges)
    assert edges(pgm) == factor_edges(factorisation)


def test_the_comparison_catches_a_missing_or_reversed_edge(case):
    _, _, pgm, factorisation, *_ = case
    expected = factor_edges(factorisation)
    edge = pgm._edges.pop()
    assert edges(pgm) != expected
    edge.node1, edge.node2 = edge.node2, edge.node1
    pgm._edges.append(edge)
    assert edges(pgm) != expected


def test_recognition_edges_are_dashed_and_partial_labels_half_shaded(case):
    name, fig, pgm, _, _, partial, recognition = case
    dashed = [line for line in fig.axes[0].lines if line.get_linestyle() not in ("-", "None")]
    assert len(dashed) == (len(pgm._edges) if recognition else 0)
    wedges = [p for p in fig.axes[0].patches if isinstance(p, Wedge)]
    assert len(wedges) == len(partial)
    if recognition:
        assert name in fig._suptitle.get_text()        # the title says which order it is


def test_renders_with_agg(case):
    _, fig, *_ = case
    assert isinstance(fig.canvas, FigureCanvasAgg)
    fig.canvas.draw()
    width, height = fig.canvas.get_width_height()
    assert width > 100 and height > 100


def test_orders_and_bad_arguments():
    assert tuple(diagrams.RECOGNITION_ORDERS) == models.ORDERS
    with pytest.raises(ValueError, match="order"):
        diagrams.recognition("label_last")
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="k must"):
            diagrams.multilabel(bad)
    with pytest.raises(ValueError, match="names"):
        diagrams.multilabel(2, ("shape",))
