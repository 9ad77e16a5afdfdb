"""Whole models as plain nn.Modules: no Lightning, no Hydra; build one in a line to test it."""

from __future__ import annotations

import torch
from torch import nn

from seq2seq.attention import ATTENTION_TYPES, make_attention
from seq2seq.encoder import Encoder
from seq2seq.errors import UserError
from seq2seq.tasks.translation.decoder import Decoder, DecoderState, EncoderMemory
from seq2seq.tokenizer import PAD_ID


class Seq2Seq(nn.Module):
    """LSTM encoder-decoder translator.

    All constructor arguments are plain values so that a model directory can rebuild the model
    from its JSON config without instantiating anything named in the file.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        embed_dim: int = 256,
        encoder_hidden_size: int = 256,
        encoder_layers: int = 2,
        bidirectional: bool = True,
        decoder_hidden_size: int = 512,
        decoder_layers: int = 1,
        attention: str = "luong_general",
        input_feeding: bool = False,
        dropout: float = 0.3,
        tie_output_embeddings: bool = True,
        share_embeddings: bool = False,
        cell: str = "fused",
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_TYPES:
            raise UserError(f"model.attention={attention!r} is not one of {', '.join(ATTENTION_TYPES)}")
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise UserError(
                "model.share_embeddings=true needs one joint vocabulary "
                f"(source has {src_vocab_size} pieces, target {tgt_vocab_size}); "
                "set tokenizer.joint=true or model.share_embeddings=false"
            )
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}

        src_embedding = nn.Embedding(src_vocab_size, embed_dim, padding_idx=PAD_ID)
        tgt_embedding = src_embedding if share_embeddings else nn.Embedding(
            tgt_vocab_size, embed_dim, padding_idx=PAD_ID)
        self.encoder = Encoder(src_embedding, encoder_hidden_size, encoder_layers, bidirectional, dropout, cell)
        # With tied output embeddings the attentional output must live in embedding space.
        output_size = embed_dim if tie_output_embeddings else decoder_hidden_size
        self.decoder = Decoder(
            tgt_embedding,
            hidden_size=decoder_hidden_size,
            encoder_size=self.encoder.output_size,
            output_size=output_size,
            attention=make_attention(attention, decoder_hidden_size, self.encoder.output_size),
            num_layers=decoder_layers,
            input_feeding=input_feeding,
            attend_before_rnn=attention == "bahdanau",
            dropout=dropout,
            cell=cell,
        )
        self.generator = nn.Linear(output_size, tgt_vocab_size)
        if tie_output_embeddings:
            self.generator.weight = tgt_embedding.weight
        self._init_weights()

    def _init_weights(self) -> None:
        for name, param in self.named_parameters():
            if "embedding" in name:
                nn.init.normal_(param, mean=0.0, std=param.size(-1) ** -0.5)
                with torch.no_grad():
                    param[PAD_ID].zero_()
            elif param.dim() > 1:
                nn.init.uniform_(param, -0.1, 0.1)
            elif "bias" in name:
                nn.init.zeros_(param)
                if "rnn.bias" in name:
                    # Forget-gate bias of 1 (Jozefowicz et al. 2015) helps early gradient flow;
                    # PyTorch orders the gates i, f, g, o and adds bias_ih and bias_hh.
                    hidden = param.size(0) // 4
                    with torch.no_grad():
                        param[hidden:2 * hidden].fill_(0.5)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[EncoderMemory, DecoderState]:
        """(B, S) source -> memory for attention and the decoder's initial state."""
        memory, (final_h, final_c) = self.encoder(src, src_lengths)
        keys = None
        if self.decoder.attention is not None:
            keys = self.decoder.attention.precompute_keys(memory)
        mask = src != PAD_ID  # (B, S)
        # A zero-length source still gets one real position so softmax has something to attend.
        mask[:, 0] = True
        return EncoderMemory(memory, keys, mask), self.decoder.init_state(final_h, final_c)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder outputs (B, T, O); `project` turns them into logits."""
        enc, state = self.encode(src, src_lengths)
        return self.decoder(tgt_in, state, enc)

    def project(self, outputs: torch.Tensor) -> torch.Tensor:
        """(..., O) decoder outputs -> (..., V) logits."""
        return self.generator(outputs)

    def output_projection(self, ids: torch.Tensor | None = None) -> nn.Module:
        """The output layer, or one over only the target pieces `ids` (a shortlist), built once
        per batch: its logits are column j = piece ids[j]."""
        if ids is None:
            return self.generator
        from seq2seq.quantization import restricted_linear

        float_layer = getattr(self, "float_generator", None)  # the int8 copy keeps the fp32 layer here
        return restricted_linear(float_layer if float_layer is not None else self.generator, ids,
                                 int8=float_layer is not None)

    def step_logits(self, prev_tokens: torch.Tensor, state: DecoderState, enc: EncoderMemory,
                    projection: nn.Module | None = None
                    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """(B,) previous tokens -> (B, V) unnormalized fp32 scores, new state, (B, S) attention.

        The searches normalize with one logsumexp per row rather than a full log-softmax."""
        output, state, weights = self.decoder.step(prev_tokens, state, enc)
        return (projection or self.generator)(output).float(), state, weights

    def decode_step(self, prev_tokens: torch.Tensor, state: DecoderState, enc: EncoderMemory
                    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """(B,) previous tokens -> (B, V) log-probabilities, new state, (B, S) attention."""
        logits, state, weights = self.step_logits(prev_tokens, state, enc)
        return torch.log_softmax(logits, dim=-1), state, weights
