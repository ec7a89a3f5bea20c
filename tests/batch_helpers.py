"""The teacher-forced encoder-decoder batch the model tests feed by hand."""

import numpy as np


def teacher_forced(inputs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
  """inputs [batch, input length], targets [batch, target length] (0 pads, EOS included) ->
  the 4 features of a train batch: the decoder reads the targets shifted right by one."""
  return {"encoder_input_tokens": inputs,
          "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
          "decoder_target_tokens": targets,
          "decoder_loss_weights": (targets > 0).astype(np.int32)}
