"""The whole experiment in one command (`ucai experiment run`): prompts → split → per constitution SFT data, SFT,
preference data, reward model, RL (and DPO) → chat serving → evaluation → report. Resumable stage by stage.

    config.py   the experiment YAML (`experiments/<name>.yaml`) as pydantic models
    split.py    the train / held-out split, fixed by hash, and the leak check
    state.py    content-addressed stage records: what is done, for which inputs
    runner.py   the pipeline: drives the running stack (batches) and the training stages (subprocesses)
"""
