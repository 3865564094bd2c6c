"""The age networks in torch, for training and export: the bundled ResNet-10 and imported
TensorFlow.js graphs."""
