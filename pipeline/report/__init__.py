"""The digest and posture report (`gatewatch report`): data, charts, rendering, delivery."""
