"""Plate diagrams of the models (daft), each returned as a ``Figure`` with its ``daft.PGM`` as ``fig.pgm``.

Shaded nodes are observed, white ones latent, half-shaded ones observed for some images only; the small
black dots are the parameters θ (decoder) and φ (encoder). Generative edges are solid, recognition
edges dashed; the plate repeats its contents over the N images (or pairs).
"""
from __future__ import annotations

import daft
from matplotlib.patches import Wedge

from .checks import check_choice, check_int

RECOGNITION_ORDERS = {
    "label_first": ("recognition, label_first (M2, Eq. 5)\n" r"$q_\phi(y\mid x)\,q_\phi(z\mid x, y)$",
                    [("x", "y"), ("x", "z"), ("y", "z")]),
    "style_first": ("recognition, style_first (thesis §3.2)\n" r"$q_\phi(z\mid x)\,q_\phi(y\mid x, z)$",
                    [("x", "z"), ("x", "y"), ("z", "y")]),
}
_PARTIAL_SHADE = "0.7"   # daft's shade of an observed node
_M2_PLATE, _M2_SHAPE = (0.45, 0.4, 2.5, 2.2, "$N$"), (3.4, 3.95)


def _diagram(title, nodes, edges, plate, shape, dashed=False, note=None):
    """Draw ``nodes`` (name, LaTeX label, x, y, kind: latent / observed / partial / parameter) and the
    directed ``edges`` (parent, child) inside the plate ``(x0, y0, width, height, label)``."""
    pgm = daft.PGM(shape=shape, origin=(0.0, 0.0), grid_unit=2.2, dpi=110)
    for name, label, x, y, kind in nodes:
        pgm.add_node(name, label, x, y, observed=kind == "observed", fixed=kind == "parameter",
                     plot_params={"fc": "none", "zorder": 2} if kind == "partial" else None)
    for parent, child in edges:   # a dashed edge: daft draws its head only, the dashed shaft follows
        pgm.add_edge(parent, child, plot_params={"lw": 0} if dashed else None)
    *rect, label = plate
    pgm.add_plate(rect, label=label, position="bottom right")
    pgm.render()
    pgm.partially_observed = frozenset(n for n, *_, kind in nodes if kind == "partial")
    ctx = pgm._ctx    # daft's model-to-plot coordinates: dashed shafts, half-shaded partial nodes
    for edge in pgm._edges if dashed else ():
        x, y, dx, dy = edge._get_coords(ctx)
        pgm.ax.plot([x, x + dx], [y, y + dy], color="k", lw=ctx.line_width, ls=(0, (4, 2.5)))
    for name in sorted(pgm.partially_observed):
        node = pgm._nodes[name]
        pgm.ax.add_artist(Wedge(ctx.convert(node.x, node.y), ctx.node_unit * node.scale / 2, 90, 270,
                                fc=_PARTIAL_SHADE, ec="none", zorder=1.5))
    fig = pgm.figure
    fig.suptitle(title, y=0.97, va="top", fontsize=9)
    if note:
        fig.text(0.5, 0.02, note, ha="center", va="bottom", fontsize=8)
    fig.pgm = pgm
    return fig


def _pair(parameter):
    """The nodes y, z (latent) and x (observed) of M2, with θ or φ above the plate."""
    return [("y", "$y$", 1.0, 2.0, "latent"), ("z", "$z$", 2.4, 2.0, "latent"), ("x", "$x$", 1.7, 1.0, "observed"),
            (parameter, rf"$\{parameter}$", 1.7, 2.95, "parameter")]


def m2_generative():
    """M2's generative model p(y) p(z) p(x | y, z), Eq. 4."""
    return _diagram("M2's generative model (Eq. 4)\n" r"$p(y)\,p(z)\,p_\theta(x\mid y, z)$", _pair("theta"),
                    [("y", "x"), ("z", "x"), ("theta", "x")], _M2_PLATE, _M2_SHAPE)


def recognition(order="label_first"):
    """The recognition model q(y, z | x): ``label_first`` (M2, Eq. 5) or ``style_first`` (thesis §3.2)."""
    title, edges = RECOGNITION_ORDERS[check_choice("order", order, RECOGNITION_ORDERS)]
    return _diagram(title, _pair("phi"), edges + [("phi", "y"), ("phi", "z")], _M2_PLATE, _M2_SHAPE, dashed=True)


def multilabel(k=2, names=None):
    """The K-label model p(y_1)..p(y_K) p(z) p(x | y_1..y_K, z) of ``models.MultiLabelSSVAE`` (thesis §4.1)."""
    k = check_int("k", k)
    if names is not None and len(names) != k:
        raise ValueError(f"names must name the {k} labels, got {names!r}")
    labels = [(f"y{i}", f"$y_{i}$", 0.7 + 1.1 * (i - 1), 2.0, "partial") for i in range(1, k + 1)]
    nodes = labels + [("z", "$z$", 0.7 + 1.1 * k, 2.0, "latent"), ("x", "$x$", 0.7 + 0.55 * k, 1.0, "observed"),
                      ("theta", r"$\theta$", 1.8 + 1.1 * k, 1.0, "parameter")]
    named = ": " + ", ".join(f"$y_{i}$ {n}" for i, n in enumerate(names, 1)) if names else ""
    return _diagram(rf"$K = {k}$ labels{named}" "\n"
                    r"$p(y_1)\cdots p(y_K)\,p(z)\,p_\theta(x\mid y_1, \dots, y_K, z)$", nodes,
                    [(n, "x") for n, *_ in labels] + [("z", "x"), ("theta", "x")],
                    (0.15, 0.4, 1.15 + 1.1 * k, 2.2, "$N$"), (2.3 + 1.1 * k, 3.4),
                    note="half-shaded $y_k$: observed for some images, latent for the rest")


def weak_supervision_pair():
    """Locatello et al. (2020)'s pairs: p(z_s) p(z_1) p(z_2) p(x_1 | z_s, z_1) p(x_2 | z_s, z_2), one decoder."""
    nodes = [("z1", "$z_1$", 0.7, 2.0, "latent"), ("z_shared", "$z_s$", 1.8, 2.0, "latent"),
             ("z2", "$z_2$", 2.9, 2.0, "latent"), ("x1", "$x_1$", 1.25, 1.0, "observed"),
             ("x2", "$x_2$", 2.35, 1.0, "observed"), ("theta", r"$\theta$", 1.8, 0.3, "parameter")]
    edges = [("z1", "x1"), ("z_shared", "x1"), ("z_shared", "x2"), ("z2", "x2"), ("theta", "x1"), ("theta", "x2")]
    return _diagram("weak supervision (Locatello et al. 2020):\n"
                    r"$x_1, x_2$ share $z_s$; $z_1$, $z_2$ are their own", nodes, edges,
                    (0.15, 0.6, 3.3, 2.0, "$N$ pairs"), (3.6, 3.4))


def ccvae():
    """Joy et al. (2021)'s characteristic-capturing VAE: p(y) p(z_c | y) p(z_\\c) p(x | z_c, z_\\c) (``models.CCVAE``):
    the label sets the prior of its own latents z_c and is not an input of the decoder."""
    nodes = [("y", "$y$", 0.9, 2.9, "partial"), ("z_c", "$z_c$", 0.9, 2.0, "latent"),
             ("z_rest", r"$z_{\backslash c}$", 2.2, 2.0, "latent"), ("x", "$x$", 1.55, 1.0, "observed"),
             ("psi", r"$\psi$", 1.65, 2.9, "parameter"), ("theta", r"$\theta$", 2.5, 1.0, "parameter")]
    edges = [("y", "z_c"), ("psi", "z_c"), ("z_c", "x"), ("z_rest", "x"), ("theta", "x")]
    return _diagram("characteristic capturing (Joy et al. 2021)\n"
                    r"$p(y)\,p_\psi(z_c\mid y)\,p(z_{\backslash c})\,p_\theta(x\mid z_c, z_{\backslash c})$",
                    nodes, edges, (0.35, 0.4, 2.5, 3.0, "$N$"), (3.3, 4.1),
                    note="half-shaded $y$: observed for labelled images")
