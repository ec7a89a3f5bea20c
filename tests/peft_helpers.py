"""The PyTorch side of the PEFT parity tests: scores under a PEFT prompt-tuning model."""

import numpy as np


def peft_log_likelihoods(tuned, batch: dict) -> np.ndarray:
  """[batch] sum over target tokens of ln p under the PEFT model `tuned`, on a model batch
  (`api.make_batch` layout; padding masked by the loss weights)."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    inputs = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long)
    logits = tuned(input_ids=inputs, attention_mask=(inputs > 0).long(),
                   decoder_input_ids=torch.tensor(batch["decoder_input_tokens"],
                                                  dtype=torch.long)).logits
    log_p = torch.log_softmax(logits.double(), -1)
    targets = torch.tensor(batch["decoder_target_tokens"], dtype=torch.long)
    picked = torch.gather(log_p, -1, targets[..., None])[..., 0]
  return (picked * torch.tensor(batch["decoder_loss_weights"])).sum(-1).numpy()
