"""The paper's ablations, one command each (``cim ablate AXIS``): components (Fig. 4), corpus scale (Fig. 5),
encoders (Table 4) and β. :mod:`cim.ablate.axes` says what each varies, :mod:`cim.ablate.run` runs one,
:mod:`cim.ablate.report` writes ``reports/ablations/<axis>.json|md|png``; docs/ablations.md."""
