"""What a run is built from: device and seeds, network, optimizer, loss and metrics, the hapi
Model, loaders, weight files and pretrained weights."""
