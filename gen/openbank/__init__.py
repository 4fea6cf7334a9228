"""Generated protobuf code for the OpenBank Mesh contract (openbank.<service>.v1). Do not edit."""
