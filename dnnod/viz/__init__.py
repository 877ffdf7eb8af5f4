"""Everything that draws: figures (:mod:`~dnnod.viz.plot`), ipywidgets panels
(:mod:`~dnnod.viz.widgets`), the mask editor (:mod:`~dnnod.viz.editor`) and the chapter
explorers (:mod:`~dnnod.viz.explore`). The only part of dnnod that imports matplotlib or
ipywidgets; the detector never imports it (``tests/test_layout.py``)."""
