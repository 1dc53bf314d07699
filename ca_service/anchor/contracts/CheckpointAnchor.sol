// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title CheckpointAnchor
/// @notice Anchors checkpoints of one ca-service transparency log (RFC 9162 tree, C2SP checkpoint).
/// @dev Deliberately not upgradeable: an anchor its owner can rewrite proves nothing. The size can
///      only grow, so the same size can never be anchored twice and history cannot be rewritten
///      here. Append-only consistency between two anchored roots is checked off chain by relying
///      parties (RFC 9162 section 2.1.4 consistency proofs served by the log); the chain enforces
///      who publishes and that the size strictly grows.
contract CheckpointAnchor {
    // Storage layout (4 slots): slot 0 packs the publisher with the latest size, so a steady-state
    // anchor touches three slots (one read-modify-write, two overwrites).
    address public publisher;
    uint64 private _size;
    bytes32 private _root;
    bytes32 private _checkpointHash;
    address public pendingPublisher;

    /// @notice A checkpoint of `size` leaves with Merkle root `root` was anchored.
    /// @param checkpointHash SHA-256 of the signed checkpoint note (C2SP signed-note bytes).
    event Anchored(uint64 indexed size, bytes32 root, bytes32 checkpointHash);
    event PublisherProposed(address indexed current, address indexed proposed);
    event PublisherChanged(address indexed previous, address indexed current);

    error NotPublisher();
    error NotPendingPublisher();
    error ZeroAddress();
    error SizeNotGrowing(uint64 latest, uint64 given);

    constructor(address initialPublisher) {
        if (initialPublisher == address(0)) revert ZeroAddress();
        publisher = initialPublisher;
        emit PublisherChanged(address(0), initialPublisher);
    }

    /// @notice Anchor a checkpoint. Only the publisher; only a strictly larger size than the last.
    function anchor(uint64 size, bytes32 root, bytes32 checkpointHash) external {
        if (msg.sender != publisher) revert NotPublisher();
        uint64 last = _size;
        if (size <= last) revert SizeNotGrowing(last, size);
        _size = size;
        _root = root;
        _checkpointHash = checkpointHash;
        emit Anchored(size, root, checkpointHash);
    }

    /// @notice The last anchored checkpoint; size 0 when nothing has been anchored.
    function latest() external view returns (uint64 size, bytes32 root, bytes32 checkpointHash) {
        return (_size, _root, _checkpointHash);
    }

    /// @notice Step one of a publisher rotation, by the current publisher. address(0) cancels.
    function proposePublisher(address proposed) external {
        if (msg.sender != publisher) revert NotPublisher();
        pendingPublisher = proposed;
        emit PublisherProposed(msg.sender, proposed);
    }

    /// @notice Step two, by the proposed key: proves the new key can sign before it takes over.
    function acceptPublisher() external {
        address proposed = pendingPublisher;
        if (msg.sender != proposed || proposed == address(0)) revert NotPendingPublisher();
        address previous = publisher;
        publisher = proposed;
        pendingPublisher = address(0);
        emit PublisherChanged(previous, proposed);
    }
}
