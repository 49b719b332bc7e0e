"""Evaluation: ISC21 metrics, retrieval, hash baselines and the evaluation engine.

* :mod:`icdlib.eval.metrics`: uAP, RP90, mAP and PR curves (``python -m icdlib.metrics``);
* :mod:`icdlib.eval.retrieval`: embedding, faiss search, score normalisation, matcher
  rescoring and local crop ensembling;
* :mod:`icdlib.eval.hashes`: the PDQ and pHash baselines;
* :mod:`icdlib.eval.engine`: one engine for ``python -m icdlib.evaluate`` and the pipeline.

Nothing is imported here, so ``icdlib.eval.metrics`` loads without torch or faiss.
"""
