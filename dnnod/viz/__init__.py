"""Everything that draws: figures (:mod:`~dnnod.viz.plot`), ipywidgets panels
(:mod:`~dnnod.viz.widgets`), the mask editor (:mod:`~dnnod.viz.editor`), the chapter
explorers (:mod:`~dnnod.viz.explore`) and their live versions for pages with no kernel
(:mod:`~dnnod.viz.live`, :mod:`~dnnod.viz.maskpaint`, :mod:`~dnnod.viz.boxtargets`). The only
part of dnnod that imports matplotlib, ipywidgets or anywidget; the detector never imports it
(``tests/test_layout.py``)."""
