"""Sequence models: LSTM and bidirectional GRU classifiers, and a temporal conv net."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import Case, sequences, tokens

# Recurrent classifiers --------------------------------------------------------------


class LSTMClassifier(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 16,
        hidden_size: int = 32,
        num_layers: int = 2,
        num_classes: int = 4,
        dropout: float = 0.2,
        pad_idx: int = 0,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_idx)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, num_classes)

        for name, param in self.lstm.named_parameters():
            if "weight_ih" in name:
                nn.init.xavier_uniform_(param.data)
            elif "weight_hh" in name:
                nn.init.orthogonal_(param.data)
            elif "bias" in name:
                param.data.fill_(0)
                # forget-gate bias of one; gate order is input, forget, cell, output
                param.data[hidden_size : 2 * hidden_size].fill_(1)

    def forward(self, x: Tensor) -> Tensor:
        embedded = self.embedding(x)
        output, (h_n, c_n) = self.lstm(embedded)
        # h_n: (num_layers, batch, hidden); classify from the last layer's final state
        return self.fc(self.dropout(h_n[-1]))


class BiGRUClassifier(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 16,
        hidden_size: int = 24,
        num_layers: int = 1,
        num_classes: int = 5,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.gru = nn.GRU(
            embed_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size * 2, num_classes)

    def forward(self, text: Tensor) -> Tensor:
        embedded = self.dropout(self.embedding(text))
        output, hidden = self.gru(embedded)
        # concatenate the final forward and backward hidden states of the top layer
        hidden = self.dropout(torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1))
        return self.fc(hidden)


# Temporal convolutional network -----------------------------------------------------


class Chomp1d(nn.Module):
    """Trim the right padding so that each convolution stays causal."""

    def __init__(self, chomp_size: int) -> None:
        super().__init__()
        self.chomp_size = chomp_size

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, : -self.chomp_size].contiguous()


class TemporalBlock(nn.Module):
    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        kernel_size: int,
        stride: int,
        dilation: int,
        padding: int,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(
            n_inputs,
            n_outputs,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
        )
        self.chomp1 = Chomp1d(padding)
        self.bn1 = nn.BatchNorm1d(n_outputs)
        self.relu1 = nn.ReLU()
        self.dropout1 = nn.Dropout(dropout)

        self.conv2 = nn.Conv1d(
            n_outputs,
            n_outputs,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
        )
        self.chomp2 = Chomp1d(padding)
        self.bn2 = nn.BatchNorm1d(n_outputs)
        self.relu2 = nn.ReLU()
        self.dropout2 = nn.Dropout(dropout)

        # the same submodules are also registered a second time, inside self.net
        self.net = nn.Sequential(
            self.conv1,
            self.chomp1,
            self.bn1,
            self.relu1,
            self.dropout1,
            self.conv2,
            self.chomp2,
            self.bn2,
            self.relu2,
            self.dropout2,
        )
        self.downsample = (
            nn.Conv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None
        )
        self.relu = nn.ReLU()
        self.init_weights()

    def init_weights(self) -> None:
        self.conv1.weight.data.normal_(0, 0.01)
        self.conv2.weight.data.normal_(0, 0.01)
        if self.downsample is not None:
            self.downsample.weight.data.normal_(0, 0.01)

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


class TemporalConvNet(nn.Module):
    def __init__(
        self,
        num_inputs: int,
        num_channels: list[int],
        kernel_size: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers = []
        num_levels = len(num_channels)
        for i in range(num_levels):
            dilation_size = 2**i
            in_channels = num_inputs if i == 0 else num_channels[i - 1]
            out_channels = num_channels[i]
            layers += [
                TemporalBlock(
                    in_channels,
                    out_channels,
                    kernel_size,
                    stride=1,
                    dilation=dilation_size,
                    padding=(kernel_size - 1) * dilation_size,
                    dropout=dropout,
                )
            ]
        self.network = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)


class TCNClassifier(nn.Module):
    def __init__(
        self,
        input_size: int,
        output_size: int,
        num_channels: list[int],
        kernel_size: int = 3,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.tcn = TemporalConvNet(
            input_size, num_channels, kernel_size=kernel_size, dropout=dropout
        )
        self.linear = nn.Linear(num_channels[-1], output_size)
        self.linear.weight.data.normal_(0, 0.01)

    def forward(self, inputs: Tensor) -> Tensor:
        # inputs: (batch, time, features); Conv1d wants (batch, features, time)
        y = self.tcn(inputs.transpose(1, 2))
        return self.linear(y[:, :, -1])


CASES = [
    Case(
        name="lstm",
        build=lambda: LSTMClassifier(
            vocab_size=60, embed_dim=16, hidden_size=32, num_layers=2, num_classes=4
        ),
        example_args=lambda: (tokens(9, 60),),
        tags=("rnn", "text"),
    ),
    Case(
        name="gru_bidirectional",
        build=lambda: BiGRUClassifier(
            vocab_size=40, embed_dim=16, hidden_size=24, num_layers=2, num_classes=5
        ),
        example_args=lambda: (tokens(7, 40),),
        tags=("rnn", "text"),
    ),
    Case(
        name="tcn",
        build=lambda: TCNClassifier(
            input_size=6, output_size=3, num_channels=[8, 8, 12], kernel_size=3
        ),
        example_args=lambda: (sequences(20, 6),),
        tags=("cnn", "sequence", "residual"),
    ),
]
