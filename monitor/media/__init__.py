"""Long videos and live streams: frames read as they come, cut into the card's clips
causally, and the clips' answers turned into a timeline."""
