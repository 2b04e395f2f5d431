"""bertlib: BERT pretraining (phase 1 + 2, LAMB, Horovod) and SQuAD finetuning, notebook-driven."""

__version__ = "0.1.0"
