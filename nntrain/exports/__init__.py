"""What a finished run is used for: `artifacts` (load_model, evaluate, export), the serving SavedModel
(`serving`), TFLite conversion (`tflite`), text generation from a language model (`generate`, its compiled loop
in `sampling`) and a run's history and predictions for notebooks (`results`). It may import everything below
it: the foundation (`errors`, `logs`, `quiet`, `compat`, `rundir`), `registry`, `config`, `distribute`, `data`,
`models` and `run`; never `tuning`, `benchmark`, `api` or `cli`. (Named `exports`, not `export`:
`nntrain.export` is the public function.)
"""
