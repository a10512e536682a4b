"""`--task embedding`: metric learning for verification, identification and similar-image search
(docs/embeddings.md). `task.py` is the task; `model.py` the network and its margin layer; `losses.py`
ArcFace, CosFace and the batch-hard triplet loss; `metrics.py` and `pairs.py` the evaluation;
`search.py` embedding files, enrolling a gallery and searching it."""
