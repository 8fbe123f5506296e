"""KFP v2 components, one folder each: `logic.py` is plain Python (tests call it directly) and
`component.py` is the thin `@dsl.component` wrapper the pipeline uses."""
