"""What chapters 2-6 built, re-exported for chapter 7 (the code lives in the buildllm package)."""

from buildllm.attention import CausalAttention, MultiHeadAttention, MultiHeadAttentionWrapper, SelfAttention_v1, SelfAttention_v2  # noqa: F401
from buildllm.checkpoints import load_model, save_model  # noqa: F401
from buildllm.classification import add_classification_head, calc_accuracy_loader, calc_class_loss_batch, class_loss_fn, classify_review, create_balanced_dataset, create_spam_dataloaders, load_sms_spam, prepare_spam_splits, random_split, SpamDataset, train_classifier_simple  # noqa: F401
from buildllm.data import create_dataloader_v1, GPTDatasetV1  # noqa: F401
from buildllm.generation import generate, generate_text_simple, text_to_token_ids, token_ids_to_text  # noqa: F401
from buildllm.gpt2 import download_and_load_gpt2, load_pretrained_gpt, load_weights_into_gpt  # noqa: F401
from buildllm.model import FeedForward, GELU, GPT_CONFIG_124M, GPTModel, LayerNorm, TransformerBlock  # noqa: F401
from buildllm.plotting import plot_losses, plot_values  # noqa: F401
from buildllm.pretrained import load_base_model  # noqa: F401
from buildllm.tokenizer import get_gpt2_tokenizer, SimpleTokenizerV1, SimpleTokenizerV2  # noqa: F401
from buildllm.training import calc_loss_batch, calc_loss_loader, evaluate_model, generate_and_print_sample, train_model_simple  # noqa: F401

__all__ = sorted(name for name in dir() if not name.startswith("_"))
