"""The video routes and the camera sessions behind them."""
