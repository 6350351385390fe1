"""What chapters 2-6 built and appendix E uses, re-exported (the code lives in the buildllm package)."""

from buildllm.classification import (
    SpamDataset,
    add_classification_head,
    calc_accuracy_loader,
    calc_loss_batch,
    calc_loss_loader,
    classify_review,
    create_balanced_dataset,
    create_spam_dataloaders,
    load_base_model,
    load_sms_spam,
    prepare_spam_splits,
    random_split,
    train_classifier_simple,
)
from buildllm.gpt2 import load_pretrained_gpt, load_weights_into_gpt
from buildllm.model import GPT_CONFIG_124M, GPTModel, get_gpt2_config
from buildllm.plotting import plot_values
from buildllm.tokenizer import get_gpt2_tokenizer
from buildllm.training import load_model

__all__ = [
    "GPT_CONFIG_124M",
    "GPTModel",
    "SpamDataset",
    "add_classification_head",
    "calc_accuracy_loader",
    "calc_loss_batch",
    "calc_loss_loader",
    "classify_review",
    "create_balanced_dataset",
    "create_spam_dataloaders",
    "get_gpt2_config",
    "get_gpt2_tokenizer",
    "load_base_model",
    "load_model",
    "load_pretrained_gpt",
    "load_sms_spam",
    "load_weights_into_gpt",
    "plot_values",
    "prepare_spam_splits",
    "random_split",
    "train_classifier_simple",
]
